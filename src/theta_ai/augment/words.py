"""Word classes (negations, question words, stopwords, droppable words) and the word- and
token-level tests the operations share (sentence start, names, acronyms, a/an)."""

from __future__ import annotations

from theta_ai.augment.spans import PUNCT, WORD, WS

NEGATIONS = frozenset("not no never none nothing nobody nowhere neither nor without cannot".split())
WH_WORDS = frozenset("what how why when where which who whom whose whether".split())
STOPWORDS = frozenset("""
a an the and or but if then so as of at by for with about against between into through during before after above
below to from up down in out on off over under again further once here there all any both each few more most other
some such only own same than too very can will just should now is are was were be been being have has had having do
does did doing would could might must shall may i me my myself we our ours you your yours he him his she her it its
they them their what which who whom this that these those am how why when where please also get got
""".split()) | NEGATIONS
#: the words word_dropout may drop: articles, prepositions, auxiliaries, pronouns, fillers (never content words,
#: negations, question words, or words that change the sense such as or, only, more, all, than)
DROPPABLE = frozenset("""
a an the is are was were be been am do does did can could would should will to of in on at for with by from into
about as that this these those my your our its their i you we it me please just so then also really very and
""".split())
QUESTION_STARTERS = WH_WORDS | frozenset(
    "is are was were do does did can could should would will shall may might am has have had isn't aren't don't "
    "doesn't didn't can't couldn't shouldn't wouldn't won't".split())
PARTICLES = frozenset("up out off down away back over".split())


def _norm(word: str) -> str:
    return word.lower().replace("\u2019", "'")


def _is_negation(word: str) -> bool:
    w = _norm(word)
    return w in NEGATIONS or w.endswith("n't")


def _is_acronym(word: str) -> bool:
    return len(word) > 1 and word.isupper()


def _sentence_initial(tokens: list[tuple[str, str]], i: int) -> bool:
    """True for the first word of the text, of a line, or after . ! ? :"""
    for kind, text in reversed(tokens[:i]):
        if kind == WS:
            if "\n" in text:
                return True
            continue
        return kind == PUNCT and text.rstrip("\"')\u201d\u2019")[-1:] in (".", "!", "?", ":")
    return True


def _is_name(tokens: list[tuple[str, str]], i: int) -> bool:
    """A capitalised word that does not start a sentence (Python, Windows, Git), or an acronym."""
    word = tokens[i][1]
    if _is_acronym(word):
        return True
    return word[:1].isupper() and word != "I" and not word.startswith("I'") and not _sentence_initial(tokens, i)


def _inverted(tokens: list[tuple[str, str]], i: int) -> bool:
    """Word ``i`` starts a sentence or follows a question word: an auxiliary there is inverted ("Why can't I")."""
    if _sentence_initial(tokens, i):
        return True
    return i >= 2 and _space(tokens, i - 1) and tokens[i - 2][0] == WORD and _norm(tokens[i - 2][1]) in WH_WORDS


def _space(tokens: list[tuple[str, str]], i: int) -> bool:
    """Token ``i`` is whitespace without a newline."""
    return 0 <= i < len(tokens) and tokens[i][0] == WS and "\n" not in tokens[i][1] and "\r" not in tokens[i][1]


def _match_case(original: str, replacement: str) -> str:
    if original[:1].isupper() and not _is_acronym(original):
        return replacement[:1].upper() + replacement[1:]
    return replacement


_AN_WORDS = ("hour", "honest", "honor", "honour", "heir")
_A_WORDS = ("uni", "use", "usu", "one", "once", "euro")


def _wants_an(word: str) -> bool:
    w = word.lower()
    if w.startswith(_AN_WORDS):
        return True
    if w.startswith(_A_WORDS):
        return False
    return w[:1] in "aeiou"
