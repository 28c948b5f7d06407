"""On-the-fly, seeded augmentation of training examples.

Each training example is rewritten a little differently in every epoch, so a long run (100 epochs
of a few hundred questions) sees many phrasings of each question instead of memorising one::

    aug = Augmenter(AugmentConfig(), seed=42)
    view = aug.augment(example, epoch=3, index=17)   # a new Example; `example` is not modified

``augment`` is a pure function of ``(seed, epoch, index, example)``: the random stream is derived
with SHA-256 from ``f"{seed}:{epoch}:{index}"`` (not Python's salted ``hash``), so runs are
reproducible, a resumed run sees exactly the views it would have seen, and DataLoader workers
need no shared state. Apply it to training examples only; validation and evaluation data stay as
written (that is the caller's choice: nothing here knows about splits).

What is changed
---------------
Question side (``user`` turns), each operation with its own probability per turn
(:class:`AugmentConfig` holds the default mix):

* ``rephrase``: "What is X?" <-> "What's X?" / "Can you explain X?" / "Tell me about X." /
  "Explain X." / "Describe X."; "What are X?", "What does X do?" and "How do I X?" have their own
  families. Only when the whole turn matches a recognised pattern and X reads as a noun phrase;
* ``synonym``: words and short phrases from the bundled lexicon
  (``resources/augment_synonyms.json``), same grammatical form, articles a/an fixed up;
* ``word_dropout``: drops a few function words (articles, prepositions, auxiliaries, pronouns:
  :data:`DROPPABLE`). Content words are never dropped, since dropping one changes what is asked
  ("a merge conflict in Git" -> "a merge in Git"); nor are negations (not, no, never, don't, ...),
  question words, "or"/"only"/"than"-like words, the first word of a sentence, or anything in a
  turn of fewer than four words;
* ``word_swap``: swaps one pair of adjacent words of which at least one is a function word
  ("Why should I" -> "Why I should"; never "hash table" -> "table hash"), no negations, not the
  first word of a sentence;
* ``typo``: a transposition, deletion, duplication or neighbouring-key substitution inside words
  of four letters or more (never the first letter, never an acronym);
* ``casing``: lowercases the whole question, or only its first letter (or capitalises an
  all-lowercase question);
* ``punctuation``: drops the final ``?``/``.``/``!``, or adds one where it is missing.

Answer side (``assistant`` turns), only with ``answer_side: true``: lexicon synonyms and nothing
else. Dropout, swaps, typos, casing and punctuation never touch answers, because the model learns
to *produce* answers: noise there would be learnt as output. The answer-side lexicon also leaves
out the ``question_only_*`` entries (command-like verbs such as run, delete, start). System turns
are never changed.

What is never changed
---------------------
Text is split into protected spans and plain words before any operation, and only plain words are
edited; newlines and indentation are kept byte for byte (spaces change only where word dropout
removes a word together with the spaces after it). Protected: fenced code blocks
(```` ``` ```` or ``~~~``), indented code lines (4 spaces or a tab), inline code, and every
whitespace-separated chunk that contains a digit, a path, URL or e-mail character (``/ \\ @``), an
underscore, a dot, colon or hyphen between letters, a leading dot or dash, code punctuation
(``= < > ( ) [ ] { } $ % # & * | ^ ~ + ```), or camelCase: so URLs, numbers, versions (3.11),
IPs (192.168.1.1), ports, file paths (/etc/hosts, C:\\Windows\\System32, ~/.ssh/id_rsa, setup.py),
identifiers (``__init__``, os.path, getUserName), flags (--dry-run) and hyphenated terms (Wi-Fi)
pass through unchanged. Sentence punctuation stuck to the end of such a chunk (``setup.py?``)
is split off first.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import random
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .data.formats import Example

__all__ = [
    "AugmentConfig", "AugmentConfigError", "Augmenter", "Lexicon", "load_lexicon", "preview",
    "protected_spans", "tokenize",
]


class AugmentConfigError(ConfigError):
    """A bad augmentation config key or value; the message names the key and how to fix it."""


# ---------------------------------------------------------------------------- configuration


def _p(default: float, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class AugmentConfig:
    """Probabilities of each augmentation: the defaults are "the default mix".

    Every ``*`` field without ``_rate`` is the probability that the operation is applied to a turn;
    a ``*_rate`` field is the share of eligible words it then touches (at least one).
    With the default mix about three questions in five are changed in a given epoch (62% of the
    bundled sample questions), and a question is seen in ~30 phrasings over 100 epochs.
    Read from YAML with :meth:`from_yaml` (same keys; ``-`` may stand for ``_``).
    """

    # ---- question side (user turns)
    rephrase: float = _p(0.25, "rewrite a recognised 'What is X?'-style question with another template")
    synonym: float = _p(0.3, "replace words/phrases with synonyms from the bundled lexicon")
    synonym_rate: float = _p(0.3, "share of replaceable words replaced when synonym applies (at least one)")
    word_dropout: float = _p(0.1, "drop a few function words (a, the, of, is, ...; never content words or negations)")
    word_dropout_rate: float = _p(0.1, "share of the turn's words dropped when word_dropout applies (at least one)")
    word_swap: float = _p(0.05, "swap one pair of adjacent words, one of them a function word")
    typo: float = _p(0.1, "character typos inside words of 4+ letters (swap, deletion, duplication, neighbouring key)")
    typo_rate: float = _p(0.1, "share of eligible words given a typo when typo applies (at least one)")
    casing: float = _p(0.15, "lowercase the question, or only its first letter")
    punctuation: float = _p(0.2, "drop the final ?/./!, or add one where it is missing")
    # ---- answer side (assistant turns): off unless answer_side is true
    answer_side: bool = _p(False, "also augment answers, with meaning-safe lexicon synonyms only")
    answer_synonym: float = _p(0.2, "with answer_side: probability of synonym replacement in an answer")
    answer_synonym_rate: float = _p(0.1, "with answer_side: share of replaceable answer words replaced")

    #: the per-turn probabilities of the question-side operations, in the order they are applied
    QUESTION_OPS = ("rephrase", "synonym", "word_dropout", "word_swap", "typo", "casing", "punctuation")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "answer_side":
                if not isinstance(value, bool):
                    raise AugmentConfigError(f"answer_side = {value!r}: expected true or false")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise AugmentConfigError(f"{f.name} = {value!r}: expected a number between 0 and 1")
            if not 0.0 <= float(value) <= 1.0:
                kind = "a share of words" if f.name.endswith("_rate") else "a probability"
                raise AugmentConfigError(f"{f.name} = {value!r} is {kind} and must be between 0 and 1")
            setattr(self, f.name, float(value))

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def off(cls, **overrides: Any) -> "AugmentConfig":
        """Every probability 0 (rates keep their defaults), then ``overrides``."""
        zero = {name: 0.0 for name in (*cls.QUESTION_OPS, "answer_synonym")}
        return cls(**{**zero, **overrides})

    @classmethod
    def only(cls, *ops: str, **overrides: Any) -> "AugmentConfig":
        """Only the named operations, each with probability 1: ``AugmentConfig.only("typo")``."""
        for op in ops:
            if op not in (*cls.QUESTION_OPS, "answer_synonym"):
                raise AugmentConfigError(f"unknown operation {op!r}{_closest(op, cls.QUESTION_OPS)}")
        return cls.off(**{op: 1.0 for op in ops}, **overrides)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], origin: str = "augment config") -> "AugmentConfig":
        """Build from a mapping, naming the closest valid key for an unknown one."""
        if not isinstance(mapping, Mapping):
            raise AugmentConfigError(f"{origin}: expected a mapping of key: value, got {type(mapping).__name__}")
        known = cls.keys()
        values = {}
        for raw_key, value in mapping.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise AugmentConfigError(f"{origin}: unknown key {raw_key!r}{_closest(key, known)} "
                                         f"(valid keys: {', '.join(known)})")
            values[key] = value
        try:
            return cls(**values)
        except AugmentConfigError as exc:
            raise AugmentConfigError(f"{origin}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "AugmentConfig":
        """Read a YAML file (``yaml.safe_load``) of ``key: value`` lines, optionally under an ``augment:`` key."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise AugmentConfigError(f"{path}: no such augmentation config file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise AugmentConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
        except UnicodeDecodeError:
            raise AugmentConfigError(f"{path}: not UTF-8 text; re-save it as UTF-8") from None
        if data is None:
            return cls()
        if isinstance(data, dict) and list(data) == ["augment"]:
            data = data["augment"] or {}
        return cls.from_dict(data, str(path))

    def describe(self) -> str:
        """One line for ``--dry-run``: the probabilities in effect."""
        q = ", ".join(f"{op} {getattr(self, op):g}" for op in self.QUESTION_OPS)
        a = (f"synonym {self.answer_synonym:g} (rate {self.answer_synonym_rate:g})" if self.answer_side
             else "off")
        return f"question side: {q}; answer side: {a}"


def _closest(name: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


# ---------------------------------------------------------------------------- lexicon


@dataclass(frozen=True)
class Lexicon:
    """Synonyms keyed by lowercase word tuples: ``("thank", "you") -> ("thanks",)``."""

    both: dict[tuple[str, ...], tuple[str, ...]]
    question_only: dict[tuple[str, ...], tuple[str, ...]]

    @property
    def question(self) -> dict[tuple[str, ...], tuple[str, ...]]:
        return {**self.both, **self.question_only}

    @property
    def size(self) -> int:
        """Number of distinct headwords and phrases."""
        return len(set(self.both) | set(self.question_only))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Lexicon":
        def expand(groups: list[list[str]], one_way: Mapping[str, list[str]]) -> dict:
            out: dict[tuple[str, ...], list[str]] = {}
            for group in groups:
                for word in group:
                    out.setdefault(_key(word), []).extend(w for w in group if w != word)
            for word, reps in one_way.items():
                out.setdefault(_key(word), []).extend(reps)
            return {k: tuple(dict.fromkeys(v)) for k, v in out.items()}

        return cls(expand(data.get("groups", []), data.get("one_way", {})),
                   expand(data.get("question_only_groups", []), data.get("question_only_one_way", {})))


def _key(phrase: str) -> tuple[str, ...]:
    return tuple(phrase.lower().replace("\u2019", "'").split())


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    """The bundled lexicon, ``theta_ai/resources/augment_synonyms.json``."""
    text = resources.files("theta_ai").joinpath("resources/augment_synonyms.json").read_text(encoding="utf-8")
    return Lexicon.from_json(json.loads(text))


# ---------------------------------------------------------------------------- tokenizing

# Structural spans, found first: fenced blocks (to the closing fence or the end), indented code lines, inline code.
_STRUCT = re.compile(
    r"(?P<fence>(?P<fch>`{3,}|~{3,})[\s\S]*?(?:(?P=fch)|\Z))"
    r"|(?P<indent>^(?: {4}|\t)[^\n]*)"
    r"|(?P<inline>``[^\n]+?``|`[^`\n]+`)",
    re.M,
)
_LEAD = re.compile(r"^[(\[{\"'\u201c\u2018\u00ab]+")
_TRAIL = re.compile(r"[.,;:!?)\]}\"'\u201d\u2019\u00bb]+$")
# A whitespace-separated chunk is protected when its core (leading/trailing punctuation peeled off) has any of these.
_PROTECT = re.compile(
    r"[0-9/\\_@=<>{}\[\]()$%#&*|^~+`]"  # digits, paths, URLs, e-mail, code punctuation
    r"|\w[.:]\w"                        # setup.py, os.path, 192.x, e.g, key:value, http:
    r"|[^\W\d_]-[^\W\d_]"               # hyphenated terms: Wi-Fi, f-strings, three-way
    r"|^[-.]"                           # flags (--dry-run, -h) and dotfiles (.gitignore)
    r"|[a-z][A-Z]|[A-Z]{2,}[a-z]"       # camelCase, iPhone, ChatGPT, GPUs, HTTPServer
)
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
_WS = re.compile(r"(\s+)")

WS, WORD, PUNCT, PROT, CODE, BLOCK = "ws", "word", "punct", "prot", "code", "block"
_PROTECTED_KINDS = (PROT, CODE, BLOCK)


def tokenize(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into ``(kind, text)`` tokens whose texts join back to ``text`` exactly.

    Kinds: ``ws`` whitespace, ``word`` a plain word (the only kind operations edit), ``punct``
    other characters, ``prot`` a protected chunk (path, number, identifier, URL, ...), ``code``
    inline code and ``block`` a fenced block or indented code line.
    """
    tokens: list[tuple[str, str]] = []
    pos = 0
    for m in _STRUCT.finditer(text):
        _tokenize_plain(text[pos:m.start()], tokens)
        tokens.append((CODE if m.group("inline") else BLOCK, m.group(0)))
        pos = m.end()
    _tokenize_plain(text[pos:], tokens)
    return tokens


def _tokenize_plain(text: str, tokens: list[tuple[str, str]]) -> None:
    for chunk in _WS.split(text):
        if not chunk:
            continue
        if chunk.isspace():
            tokens.append((WS, chunk))
            continue
        lead = _LEAD.match(chunk)
        start = lead.end() if lead else 0
        trail = _TRAIL.search(chunk, start)
        end = trail.start() if trail else len(chunk)
        if start:
            tokens.append((PUNCT, chunk[:start]))
        core = chunk[start:end]
        if core and _PROTECT.search(core):
            tokens.append((PROT, core))
        elif core:
            at = 0
            for m in _WORD.finditer(core):
                if m.start() > at:
                    tokens.append((PUNCT, core[at:m.start()]))
                tokens.append((WORD, m.group(0)))
                at = m.end()
            if at < len(core):
                tokens.append((PUNCT, core[at:]))
        if end < len(chunk):
            tokens.append((PUNCT, chunk[end:]))


def protected_spans(text: str) -> list[str]:
    """The protected spans of ``text`` in order (code, paths, numbers, URLs, identifiers...)."""
    return [t for kind, t in tokenize(text) if kind in _PROTECTED_KINDS]


def _join(tokens: list[tuple[str, str]]) -> str:
    return "".join(t for _, t in tokens)


# ---------------------------------------------------------------------------- word classes

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
_NEIGHBOURS = {
    "q": "wa", "w": "qeas", "e": "wrsd", "r": "etdf", "t": "ryfg", "y": "tugh", "u": "yihj", "i": "uojk", "o": "ipkl",
    "p": "ol", "a": "qwsz", "s": "awedxz", "d": "serfcx", "f": "drtgvc", "g": "ftyhbv", "h": "gyujnb", "j": "huikmn",
    "k": "jiolm", "l": "kop", "z": "asx", "x": "zsdc", "c": "xdfv", "v": "cfgb", "b": "vghn", "n": "bhjm", "m": "njk",
}


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


# ---------------------------------------------------------------------------- operations
# Each takes the text and a Random and returns the new text; the text is re-tokenized each time,
# so every operation sees an accurate split of protected spans and words.


def _op_synonym(text: str, rng: random.Random, lexicon: Mapping[tuple[str, ...], tuple[str, ...]], rate: float) -> str:
    tokens = tokenize(text)
    max_len = max((len(k) for k in lexicon), default=1)
    candidates: list[tuple[int, int, tuple[str, ...]]] = []  # first token, last token, replacements
    i = 0
    while i < len(tokens):
        if tokens[i][0] != WORD or _is_name(tokens, i):
            i += 1
            continue
        span = [i]  # token indices of consecutive words separated by one run of spaces
        while len(span) < max_len and _space(tokens, span[-1] + 1) and span[-1] + 2 < len(tokens) \
                and tokens[span[-1] + 2][0] == WORD:
            span.append(span[-1] + 2)
        for n in range(len(span), 0, -1):
            words = [tokens[j][1] for j in span[:n]]
            reps = lexicon.get(tuple(_norm(w) for w in words))
            if not reps or any(_is_acronym(w) for w in words[1:]):
                continue
            after = span[n - 1] + 2
            if n == 1 and _space(tokens, after - 1) and after < len(tokens) and tokens[after][0] == WORD \
                    and _norm(tokens[after][1]) in PARTICLES:
                continue  # "find out", "give up": the verb alone is not the phrase's meaning
            if n == 1 and _norm(words[0]).endswith("n't") and _inverted(tokens, span[0]):
                continue  # "Why doesn't it" must not become "Why does not it"
            candidates.append((span[0], span[n - 1], reps))
            i = span[n - 1]
            break
        i += 1
    if not candidates:
        return text
    k = max(1, round(rate * len(candidates)))
    chosen = sorted(rng.sample(candidates, min(k, len(candidates))), reverse=True)
    out = list(tokens)
    for first, last, reps in chosen:
        original = out[first][1]
        replacement = _match_case(original, rng.choice(reps))
        out[first:last + 1] = [(WORD, replacement)]
        # a/an agreement with the word that now follows the article
        if first >= 2 and _space(out, first - 1) and out[first - 2][0] == WORD \
                and _norm(out[first - 2][1]) in ("a", "an") and _wants_an(original) != _wants_an(replacement):
            article = out[first - 2][1]
            new = "an" if _wants_an(replacement) else "a"
            out[first - 2] = (WORD, new.capitalize() if article[0].isupper() else new)
    return _join(out)


def _op_word_dropout(text: str, rng: random.Random, rate: float) -> str:
    tokens = tokenize(text)
    words = [i for i, (kind, _) in enumerate(tokens) if kind == WORD]
    if len(words) < 4:
        return text
    eligible = [i for i in words
                if _norm(tokens[i][1]) in DROPPABLE and i > 0 and tokens[i - 1][0] == WS and _space(tokens, i + 1)
                and not _sentence_initial(tokens, i)]
    if not eligible:
        return text
    k = min(len(eligible), max(1, round(rate * len(words))))
    out = list(tokens)
    for i in sorted(rng.sample(eligible, k), reverse=True):
        del out[i:i + 2]  # the word and the spaces after it
    return _join(out)


def _op_word_swap(text: str, rng: random.Random) -> str:
    tokens = tokenize(text)
    pairs = [i for i in range(len(tokens) - 2)
             if tokens[i][0] == WORD and _space(tokens, i + 1) and tokens[i + 2][0] == WORD
             and not _sentence_initial(tokens, i)
             and (_norm(tokens[i][1]) in STOPWORDS or _norm(tokens[i + 2][1]) in STOPWORDS)
             and not _is_negation(tokens[i][1]) and not _is_negation(tokens[i + 2][1])
             and _norm(tokens[i][1]) != _norm(tokens[i + 2][1])]
    if not pairs:
        return text
    i = rng.choice(pairs)
    out = list(tokens)
    out[i], out[i + 2] = tokens[i + 2], tokens[i]
    return _join(out)


def _typo(word: str, rng: random.Random) -> str:
    n = len(word)
    kind = rng.choice(("transpose", "delete", "duplicate", "neighbour"))
    if kind == "transpose":
        spots = [p for p in range(1, n - 1) if word[p].lower() != word[p + 1].lower()]
        if spots:
            p = rng.choice(spots)
            return word[:p] + word[p + 1] + word[p] + word[p + 2:]
        kind = "delete"
    p = rng.randrange(1, n)
    if kind == "delete":
        return word[:p] + word[p + 1:]
    if kind == "duplicate":
        return word[:p + 1] + word[p] + word[p + 1:]
    c = word[p]
    key = rng.choice(_NEIGHBOURS.get(c.lower(), c.lower()))
    return word[:p] + (key.upper() if c.isupper() else key) + word[p + 1:]


def _op_typo(text: str, rng: random.Random, rate: float) -> str:
    tokens = tokenize(text)
    eligible = [i for i, (kind, w) in enumerate(tokens)
                if kind == WORD and len(w) >= 4 and w.isascii() and w.isalpha() and not _is_acronym(w)]
    if not eligible:
        return text
    k = max(1, round(rate * len(eligible)))
    out = list(tokens)
    for i in sorted(rng.sample(eligible, k)):
        out[i] = (WORD, _typo(tokens[i][1], rng))
    return _join(out)


def _op_casing(text: str, rng: random.Random) -> str:
    tokens = tokenize(text)
    words = [i for i, (kind, _) in enumerate(tokens) if kind == WORD]
    if not words:
        return text
    first_nonws = next(i for i, (kind, _) in enumerate(tokens) if kind != WS)
    out = list(tokens)
    if not any(ch.isupper() for i in words for ch in tokens[i][1]):
        if words[0] == first_nonws:  # an all-lowercase question: capitalise it
            out[first_nonws] = (WORD, tokens[first_nonws][1][:1].upper() + tokens[first_nonws][1][1:])
        return _join(out)
    first = tokens[first_nonws][1]
    can_lower_first = (words[0] == first_nonws and first[:1].isupper() and not _is_acronym(first)
                       and first != "I" and not first.startswith("I'"))
    if can_lower_first and rng.random() < 0.5:
        out[first_nonws] = (WORD, first[:1].lower() + first[1:])
    else:
        for i in words:
            out[i] = (WORD, tokens[i][1].lower())
    return _join(out)


def _op_punctuation(text: str, rng: random.Random) -> str:
    tokens = tokenize(text)
    last = next((i for i in range(len(tokens) - 1, -1, -1) if tokens[i][0] != WS), None)
    if last is None:
        return text
    kind, tail = tokens[last]
    out = list(tokens)
    if kind == PUNCT and tail in ("?", ".", "!") and last > 0 and tokens[last - 1][0] in (WORD, PROT, CODE):
        del out[last]
    elif kind == WORD:
        first_word = next(t for k, t in tokens if k == WORD)
        out.insert(last + 1, (PUNCT, "?" if _norm(first_word) in QUESTION_STARTERS else "."))
    return _join(out)


# ---- rephrasing templates

_SINGULAR = ("What is {x}?", "What's {x}?", "Can you explain {x}?", "Tell me about {x}.", "Explain {x}.", "Describe {x}.")
_PLURAL = ("What are {x}?", "Can you explain {x}?", "Tell me about {x}.", "Explain {x}.", "Describe {x}.")
_NEUTRAL = ("Can you explain {x}?", "Tell me about {x}.", "Explain {x}.", "Describe {x}.")
_DOES = ("What does {x} do?", "What is the purpose of {x}?", "Explain what {x} does.")
_HOW = ("How do I {x}?", "How can I {x}?", "How would I {x}?")
# (pattern, family, index of the template the pattern corresponds to, or -1 when it is not one of them)
_REPHRASE = (
    (re.compile(r"(?i)what\s+is\s+(?P<x>.+?)\s*\??"), _SINGULAR, 0),
    (re.compile(r"(?i)what['\u2019]s\s+(?P<x>.+?)\s*\??"), _SINGULAR, 1),
    (re.compile(r"(?i)what\s+are\s+(?P<x>.+?)\s*\??"), _PLURAL, 0),
    (re.compile(r"(?i)(?:can|could)\s+you\s+explain\s+(?P<x>.+?)\s*\??"), _NEUTRAL, 0),
    (re.compile(r"(?i)tell\s+me\s+about\s+(?P<x>.+?)\s*[.!]?"), _NEUTRAL, 1),
    (re.compile(r"(?i)explain\s+(?P<x>.+?)\s*[.!]?"), _NEUTRAL, 2),
    (re.compile(r"(?i)describe\s+(?P<x>.+?)\s*[.!]?"), _NEUTRAL, 3),
    (re.compile(r"(?i)what\s+does\s+(?P<x>.+?)\s+do\s*\??"), _DOES, 0),
    (re.compile(r"(?i)how\s+(?:do|can)\s+I\s+(?P<x>.+?)\s*\??"), _HOW, -1),
)
_PRONOUNS = frozenset("i me my mine myself you your yours yourself we us our".split())
_NOT_NOUN_START = frozenset("it this that these those they them he she there here".split()) | WH_WORDS
_NOT_NOUN_END = frozenset("for to of in on at by with from about like into than as".split())
_PARTICIPLES = frozenset("used called needed meant made done stored required considered supposed known based".split())


def _noun_phrase(x: str) -> bool:
    """X of a template reads as a noun phrase: one line, one clause, no question word or 'you'/'my'."""
    tokens = tokenize(x)
    if any(k == BLOCK or (k == WS and "\n" in t) for k, t in tokens):
        return False
    if any(k == PUNCT and re.search(r"[.?!;:]", t) for k, t in tokens):
        return False
    words = [_norm(t) for k, t in tokens if k == WORD]
    if not words and not any(k in (PROT, CODE) for k, _ in tokens):
        return False
    if words and (words[0] in _NOT_NOUN_START or words[-1] in _NOT_NOUN_END):
        return False
    return not any(w in WH_WORDS or w in _PRONOUNS or w in _PARTICIPLES for w in words)


def _op_rephrase(text: str, rng: random.Random) -> str:
    body = text.strip()
    if not body or "\n" in body:
        return text  # only one-line questions are rephrased
    for pattern, family, current in _REPHRASE:
        m = pattern.fullmatch(body)
        if not m:
            continue
        x = m.group("x")
        if family is _HOW:
            words = [_norm(t) for k, t in tokenize(x) if k == WORD]
            ok = "\n" not in x and "?" not in x and bool(words) and words[0] not in WH_WORDS
        else:
            ok = _noun_phrase(x)
        if not ok:
            return text
        choices = [t for i, t in enumerate(family) if i != current]
        new = rng.choice(choices).format(x=x)
        lead = text[:len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()):]
        return lead + new + trail
    return text


# ---------------------------------------------------------------------------- the augmenter


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class Augmenter:
    """Seeded, per-epoch augmentation of :class:`~theta_ai.data.formats.Example` objects.

    >>> aug = Augmenter(AugmentConfig.only("rephrase"), seed=0)
    >>> aug.augment_text("What is DNS?", epoch=0, index=0) in {"What's DNS?", "Can you explain DNS?",
    ...     "Tell me about DNS.", "Explain DNS.", "Describe DNS."}
    True

    Every operation draws from its own random stream, derived from
    ``(seed, epoch, index, turn, operation)``, so turning one operation on or off does not change
    what the others do. The object holds no mutable state and pickles cheaply (DataLoader workers).
    """

    def __init__(self, config: AugmentConfig | None = None, seed: int = 0, lexicon: Lexicon | None = None):
        self.config = config if config is not None else AugmentConfig()
        self.seed = int(seed)
        self.lexicon = lexicon if lexicon is not None else load_lexicon()
        self._question_lexicon = self.lexicon.question
        self._answer_lexicon = self.lexicon.both

    def __repr__(self) -> str:
        return f"Augmenter(seed={self.seed}, {self.config.describe()})"

    def augment(self, example: "Example", epoch: int, index: int) -> "Example":
        """A new Example with user turns (and, with ``answer_side``, assistant turns) augmented.

        A pure function of ``(seed, epoch, index, example)``; ``example`` itself is not modified.
        """
        messages = []
        for turn, message in enumerate(example.messages):
            role, content = message.get("role"), message.get("content")
            new = dict(message)
            if isinstance(content, str):
                if role == "user":
                    new["content"] = self.augment_text(content, epoch, index, turn=turn)
                elif role == "assistant" and self.config.answer_side:
                    new["content"] = self.augment_text(content, epoch, index, turn=turn, role="assistant")
            messages.append(new)
        return dataclasses.replace(example, messages=messages, meta=dict(example.meta))

    def augment_text(self, text: str, epoch: int, index: int, turn: int = 0, role: str = "user") -> str:
        """Augment one turn's text as :meth:`augment` would (``role`` "user" or "assistant")."""
        cfg = self.config

        def fires(op: str, probability: float) -> random.Random | None:
            rng = _rng(self.seed, epoch, index, turn, op)
            return rng if probability > 0 and rng.random() < probability else None

        if role == "assistant":
            rng = fires("answer_synonym", cfg.answer_synonym)
            return _op_synonym(text, rng, self._answer_lexicon, cfg.answer_synonym_rate) if rng else text
        if role != "user":
            return text
        if rng := fires("rephrase", cfg.rephrase):
            text = _op_rephrase(text, rng)
        if rng := fires("synonym", cfg.synonym):
            text = _op_synonym(text, rng, self._question_lexicon, cfg.synonym_rate)
        if rng := fires("word_dropout", cfg.word_dropout):
            text = _op_word_dropout(text, rng, cfg.word_dropout_rate)
        if rng := fires("word_swap", cfg.word_swap):
            text = _op_word_swap(text, rng)
        if rng := fires("typo", cfg.typo):
            text = _op_typo(text, rng, cfg.typo_rate)
        if rng := fires("casing", cfg.casing):
            text = _op_casing(text, rng)
        if rng := fires("punctuation", cfg.punctuation):
            text = _op_punctuation(text, rng)
        return text


def preview(examples: Iterable["Example"], augmenter: Augmenter, n: int = 3, epoch: int = 0) -> list[tuple[str, str]]:
    """Up to ``n`` ``(original question, augmented question)`` pairs for ``--dry-run --augment``.

    The first ``n`` examples whose question the given epoch actually changes, each augmented at its
    own index (so the pair is exactly what training will see); fewer when fewer change.
    """
    pairs: list[tuple[str, str]] = []
    if n <= 0:
        return pairs
    for index, example in enumerate(examples):
        after = augmenter.augment(example, epoch, index).question
        if after != example.question:
            pairs.append((example.question, after))
            if len(pairs) == n:
                break
    return pairs
