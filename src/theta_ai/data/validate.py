"""Typed data errors, skip records, and the duplicate / leakage reports.

Every problem a user can meet in a data file is a :class:`DataError` that names
the file, the place in it (``line 12, column 5`` for JSON Lines and CSV,
``record index 3`` for a JSON list), the field, what was expected and how to fix
it. With ``--skip-invalid`` the same information becomes a :class:`SkippedItem`
and is summarised; nothing is dropped without a line saying so.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable
from theta_ai.errors import DataError  # noqa: F401 (defined in errors.py)

if TYPE_CHECKING:  # pragma: no cover
    from theta_ai.data.formats import Example


def read_text(path: Path) -> str:
    """A data file's text: readable, UTF-8 (a BOM is fine), no NUL byte, not empty; else the located DataError."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise DataError(file, None, None, "cannot be read (permission denied)", "fix the file's permissions or leave it out")
    except OSError as exc:
        raise DataError(file, None, None, f"cannot be read ({exc.strerror or exc})", "check the path")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # exc.start indexes exc.object, which lacks the BOM when the file starts with one
        start = exc.start + len(raw) - len(exc.object)
        line = raw[:start].count(b"\n") + 1
        raise DataError(file, f"line {line} (byte {start})", None,
                        f"is not valid UTF-8 (byte 0x{raw[start]:02x})",
                        "re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(file, f"line {line}", None, "contains a NUL byte (binary data?)",
                        "remove the NUL bytes or re-export the file as text")
    if not text.strip():
        raise DataError(file, None, None, "is empty", "add records or leave the file out")
    return text


def json_error(file: str, exc: json.JSONDecodeError, line_offset: int = 0) -> DataError:
    """The DataError of a JSON syntax error, at its line (plus ``line_offset``) and column."""
    where = f"line {exc.lineno + line_offset}, column {exc.colno}"
    return DataError(file, where, None, f"invalid JSON ({exc.msg})",
                     "fix the JSON syntax there (a missing comma, quote or bracket?)")


def parse_json(text: str, file: str, where_offset: int = 0) -> Any:
    """``json.loads`` with located errors (syntax, nesting too deep)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise json_error(file, exc, where_offset) from None
    except RecursionError:
        raise DataError(file, None, None, "is nested too deeply to parse", "flatten the structure to the documented format") from None


def require_text(value, file: str, where: str | None, name: str, fix: str) -> str:
    """``value`` if it is a non-empty string, else the DataError naming ``name`` (missing/null, not a string, empty)."""
    if value is None:
        raise DataError(file, where, name, "is missing or null", fix)
    if not isinstance(value, str):
        raise DataError(file, where, name, f"must be a string, got {type(value).__name__}", fix)
    if not value.strip():
        raise DataError(file, where, name, "is empty", fix)
    return value


def check_domain(domain, file: str, where: str | None, name: str = "domain") -> str:
    """A record's domain: ``general`` when absent, else a non-empty string with the white space around it removed."""
    if domain is None:
        return "general"
    if not isinstance(domain, str) or not domain.strip():
        raise DataError(file, where, name, f"must be a non-empty string, got {domain!r}",
                        'write a domain name such as "programming", or remove the field')
    return domain.strip()


@dataclass(frozen=True)
class SkippedItem:
    """A record or a whole file left out under ``--skip-invalid``, with the reason."""

    error: DataError
    whole_file: bool = False

    def __str__(self) -> str:
        what = "file" if self.whole_file else "record"
        return f"skipped {what}: {self.error.describe()}"


def summarize_skipped(skipped: list[SkippedItem]) -> list[str]:
    """One line per file with the number of skipped items and the reasons, plus a total line."""
    if not skipped:
        return []
    by_file: dict[str, list[SkippedItem]] = defaultdict(list)
    for item in skipped:
        by_file[item.error.file].append(item)
    lines = [f"--skip-invalid: skipped {len(skipped)} item(s) in {len(by_file)} file(s):"]
    for file, items in by_file.items():
        reasons = Counter(
            ("whole file: " if i.whole_file else "") + (f'"{i.error.field}" ' if i.error.field else "") + i.error.problem
            for i in items
        )
        detail = "; ".join(f"{n} x {reason}" for reason, n in reasons.most_common())
        lines.append(f"  {file}: {len(items)} skipped ({detail})")
    return lines


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_question(text: str) -> str:
    """Lower-case, drop punctuation, collapse white space: the key used for duplicates and leakage."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


@dataclass
class OverlapReport:
    """Questions found more than once (duplicates) or in two datasets (leakage).

    ``groups`` maps a normalized question to the sources (``file, place``) holding it.
    """

    kind: str
    groups: dict[str, list[str]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.groups)

    def lines(self, limit: int = 5) -> list[str]:
        if not self.groups:
            return []
        if self.kind == "duplicate":
            head = f"{self.count} question(s) appear more than once in the training data:"
        else:
            head = f"{self.count} validation question(s) also appear in the training data (leakage):"
        out = [head]
        for question, sources in list(self.groups.items())[:limit]:
            out.append(f"  {question!r}: {', '.join(sources)}")
        if self.count > limit:
            out.append(f"  ... and {self.count - limit} more")
        return out


def find_duplicates(examples: Iterable["Example"]) -> OverlapReport:
    """Report questions (first user turn) that occur more than once."""
    seen: dict[str, list[str]] = defaultdict(list)
    for ex in examples:
        seen[normalize_question(ex.question)].append(ex.source)
    return OverlapReport("duplicate", {q: s for q, s in seen.items() if len(s) > 1})


def find_leakage(train: Iterable["Example"], val: Iterable["Example"]) -> OverlapReport:
    """Report validation questions whose normalized text also occurs in the training data."""
    train_sources: dict[str, list[str]] = defaultdict(list)
    for ex in train:
        train_sources[normalize_question(ex.question)].append(ex.source)
    groups: dict[str, list[str]] = {}
    for ex in val:
        key = normalize_question(ex.question)
        if key in train_sources:
            groups.setdefault(key, [ex.source] + train_sources[key])
    return OverlapReport("leakage", groups)
