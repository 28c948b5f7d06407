"""Splitting text into protected spans and plain words: :func:`tokenize`, :func:`protected_spans`,
and joining tokens back (``_join``)."""

from __future__ import annotations

import re

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
