"""Typed data errors, skip records, and the duplicate / leakage reports.

Every problem a user can meet in a data file is a :class:`DataError` that names
the file, the place in it (``line 12, column 5`` for JSON Lines and CSV,
``record index 3`` for a JSON list), the field, what was expected and how to fix
it. With ``--skip-invalid`` the same information becomes a :class:`SkippedItem`
and is summarised; nothing is dropped without a line saying so.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable
from theta_ai.errors import DataError  # noqa: F401 (defined in errors.py)

if TYPE_CHECKING:  # pragma: no cover
    from theta_ai.data.formats import Example


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
