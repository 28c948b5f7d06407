"""The augmentation operations, ``_op_*``.

Each takes the text and a Random and returns the new text; the text is re-tokenized each time,
so every operation sees an accurate split of protected spans and words.
"""

from __future__ import annotations

import random
import re
from typing import Mapping

from theta_ai.augment.spans import BLOCK, CODE, PROT, PUNCT, WORD, WS, _join, tokenize
from theta_ai.augment.words import (
    DROPPABLE, PARTICLES, QUESTION_STARTERS, STOPWORDS, WH_WORDS, _inverted, _is_acronym, _is_name,
    _is_negation, _match_case, _norm, _sentence_initial, _space, _wants_an,
)


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


#: the keys next to each letter on a QWERTY keyboard, for neighbouring-key typos
_NEIGHBOURS = {
    "q": "wa", "w": "qeas", "e": "wrsd", "r": "etdf", "t": "ryfg", "y": "tugh", "u": "yihj", "i": "uojk", "o": "ipkl",
    "p": "ol", "a": "qwsz", "s": "awedxz", "d": "serfcx", "f": "drtgvc", "g": "ftyhbv", "h": "gyujnb", "j": "huikmn",
    "k": "jiolm", "l": "kop", "z": "asx", "x": "zsdc", "c": "xdfv", "v": "cfgb", "b": "vghn", "n": "bhjm", "m": "njk",
}


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
            word = tokens[first_nonws][1]
            head = word[:1].upper()  # one letter can become two ("ß" -> "SS", an acronym-like "SSa"): leave those
            out[first_nonws] = (WORD, head + word[1:] if len(head) == 1 else word)
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
