"""Field and role maps, layout detection, and mixing several sources by weight.

Records whose fields or roles have other names are read as they are, without rewriting the files:

* ``--field-map question=prompt,answer=response`` (``THETA=FILE``): theta's field on the left, the file's name on
  the right. Theta's fields: ``question``, ``input`` (joined to the question), ``answer``, ``domain``,
  ``conversations`` (the list of turns), ``role`` and ``content`` (the fields of a turn).
* ``--role-map human=user,bot=assistant`` (``FILE=THETA``): the file's role on the left, ``system``, ``user`` or
  ``assistant`` on the right.
* Without a map: ``question``/``answer``; Alpaca ``instruction``/``input``/``output`` (the question is the instruction,
  then a blank line and the input when there is one); ``messages`` / ``conversation`` lists of role/content turns;
  ShareGPT ``conversations`` of ``from``/``value`` turns with roles ``human``, ``gpt``, ``system``; turns written as
  pairs ``{"user": "...", "assistant": "..."}``.

Mixing: ``--data a.json:2 --data b.jsonl:0.5`` gives every source a weight ``w``; it contributes ``round(w * n)`` of
its ``n`` training examples (halves round up): whole copies for the integer part, then a sample without replacement
seeded by ``--seed`` and the source's position. A weight below 1 is a fraction of the source.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from theta_ai.config.resolve import split_weight
from theta_ai.errors import ConfigError, DataError

FIELDS = ("question", "input", "answer", "domain", "conversations", "role", "content")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}  # from/value turns also take these without a map
CONVERSATION_KEYS = ("messages", "conversation", "conversations")
# Question/answer pairs under other names that a map reads: (question, answer) as the file spells them.
KNOWN_PAIRS = (("prompt", "response"), ("prompt", "completion"), ("input", "output"), ("instruction", "response"),
               ("query", "response"), ("question", "response"), ("prompt", "answer"))
T = TypeVar("T")


def _pairs(text: str | None, flag: str, example: str):
    for part in (text or "").split(","):
        left, sep, right = (s.strip() for s in part.partition("="))
        if not part.strip():
            continue
        if not sep or not left or not right:
            raise ConfigError(f"{flag} {text!r}: {part.strip()!r} is not NAME=NAME; write e.g. {flag} {example}")
        yield left, right


@dataclass(frozen=True)
class DataMaps:
    """``fields``: theta's field -> the file's name; ``roles``: the file's role -> system/user/assistant."""

    fields: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)

    def role_of(self, raw: Any, style: str) -> str | None:
        """Theta's role for a turn's role value (or a pair turn's key), or None when it is none of them."""
        if not isinstance(raw, str):
            return None
        if raw in self.roles:
            return self.roles[raw]
        if raw in ROLES:
            return raw
        return SHAREGPT_ROLES.get(raw) if style == "from/value" else None

    def turn_role(self, raw: Any, style: str, file: str, where: str, name: str, report: FileReport | None) -> str:
        """Theta's role for a turn (counted in ``report`` when the role map gave it), or the DataError naming it."""
        role = self.role_of(raw, style)
        if role is None:
            fix = "use one of system, user, assistant"  # plain role/content turns: the message of earlier versions
            if style != "role/content":
                fix += (", human, gpt" if style == "from/value" else "") + (
                    f", or map it with --role-map {raw}=assistant (or =user)" if isinstance(raw, str) else "")
            raise DataError(file, where, name, f"unknown role {raw!r}", fix)
        if report is not None and raw in self.roles:
            report.roles_used.add(raw)
        return role

    def describe(self, which: str) -> str:
        pairs = self.fields.items() if which == "fields" else self.roles.items()
        return ",".join(f"{a}={b}" for a, b in pairs)


def parse_maps(field_map: str | None = None, role_map: str | None = None) -> DataMaps:
    """``--field-map`` / ``--role-map`` text -> :class:`DataMaps`; a name that cannot be meant is a ConfigError."""
    fields: dict[str, str] = {}
    for ours, theirs in _pairs(field_map, "--field-map", "question=prompt,answer=response"):
        ours = "conversations" if ours == "messages" else ours
        if ours not in FIELDS:
            swap = f"; write it the other way round: {theirs}={ours}" if theirs in FIELDS else ""
            raise ConfigError(f"--field-map {field_map!r}: {ours!r} is not a theta field (the left side is one of "
                              f"{', '.join(FIELDS)}: THETA=FILE){swap}")
        if ours in fields or theirs in fields.values():
            twice = ours if ours in fields else theirs
            raise ConfigError(f"--field-map {field_map!r}: {twice!r} is mapped twice; map each name once")
        fields[ours] = theirs
    roles: dict[str, str] = {}
    for theirs, ours in _pairs(role_map, "--role-map", "human=user,gpt=assistant"):
        if ours not in ROLES:
            swap = f"; write it the other way round: {ours}={theirs}" if theirs in ROLES else ""
            raise ConfigError(f"--role-map {role_map!r}: {ours!r} is not a theta role (the right side is one of "
                              f"{', '.join(ROLES)}: FILE=THETA){swap}")
        roles[theirs] = ours
    return DataMaps(fields, roles)


NO_MAPS = DataMaps()

# ---------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Layout:
    """How one record is read: the question/input/answer fields, or the field holding its turns (``key``)."""

    label: str
    question: str | None = None
    input: str | None = None
    answer: str | None = None
    key: str | None = None
    mapped: bool = False


def record_layouts(record: dict, maps: DataMaps = NO_MAPS) -> list[Layout]:
    """Every layout ``record`` matches, the one it is read as first: mapped names, conversations, question/answer,
    Alpaca. A field holding null counts as absent, unless nothing else matches (so its error names it)."""
    f = maps.fields
    for strict in (True, False):
        def has(name: str | None, strict: bool = strict) -> bool:
            return name is not None and name in record and (record[name] is not None or not strict)

        found = []
        if has(f.get("conversations")):
            found.append(Layout(f["conversations"], key=f["conversations"], mapped=True))
        if ("question" in f or "answer" in f) and (has(f.get("question")) or has(f.get("answer"))):
            q, i, a = f.get("question", "question"), f.get("input"), f.get("answer", "answer")
            found.append(Layout("/".join(n for n in (q, i, a) if n), q, i, a, mapped=True))
        found += [Layout(key, key=key) for key in CONVERSATION_KEYS if has(key)]
        if has("question") or has("answer"):
            found.append(Layout("question/answer", "question", f.get("input"), "answer"))
        if has("instruction"):
            found.append(Layout(f"Alpaca (instruction/{f.get('input', 'input')}/output)", "instruction",
                                f.get("input", "input"), "output"))
        if found:
            return found
    return []


@dataclass(frozen=True)
class TurnStyle:
    label: str  # "role/content", "from/value", "speaker/text" (mapped), "user/assistant pairs"
    role: str | None = None
    content: str | None = None


def turn_style(turn: dict, maps: DataMaps = NO_MAPS) -> TurnStyle | None:
    """How one turn is read: mapped role/content names, ShareGPT from/value, role/content, or a pair object
    whose keys are roles (``{"user": ..., "assistant": ...}``); None when it is none of them. As for records, a
    field holding null counts as absent unless nothing else matches."""
    f = maps.fields
    for strict in (True, False):
        def has(name: str | None, strict: bool = strict) -> bool:
            return name is not None and name in turn and (turn[name] is not None or not strict)

        if has(f.get("role")) or has(f.get("content")):
            role, content = f.get("role", "role"), f.get("content", "content")
            return TurnStyle(f"{role}/{content}", role, content)
        if has("from") or has("value"):
            return TurnStyle("from/value", "from", "value")
        if has("role") or has("content"):
            return TurnStyle("role/content", "role", "content")
        roles = [k for k in turn if has(k) and maps.role_of(k, "pairs")]
        if roles and strict:
            return TurnStyle("/".join(roles) + " pairs")
    return None


def unknown_record_fix(record: dict, maps: DataMaps, default: str) -> str:
    """The fix for a record no layout matches: the map that would read it, where its keys suggest one."""
    for key, value in record.items():
        if isinstance(value, list) and value and all(isinstance(t, dict) for t in value) and key != maps.fields.get(
                "conversations"):
            return f"if {key!r} holds the conversation's turns, read it with --field-map conversations={key}"
    for q, a in KNOWN_PAIRS:
        if q in record and a in record:
            return f"read these fields with --field-map question={q},answer={a}"
    return default


# ---------------------------------------------------------------------------- per-file reports


@dataclass
class FileReport:
    """How one file was read: examples per layout, the map entries it used, records that matched several layouts."""

    file: str
    layouts: Counter = field(default_factory=Counter)
    fields_used: set = field(default_factory=set)
    roles_used: set = field(default_factory=set)
    ambiguous: Counter = field(default_factory=Counter)  # (layout read as, the others it matched) -> records
    conversations: int = 0  # records read as conversations (a role map can only apply to those files)

    def add(self, label: str, record: Any, maps: DataMaps, others: Sequence[Layout] = (), turns: bool = False) -> None:
        self.layouts[label] += 1
        self.conversations += turns
        if isinstance(record, dict):
            self.fields_used |= {ours for ours, theirs in maps.fields.items() if theirs in record}
        if others:
            self.ambiguous[label, " and ".join(o.label for o in others)] += 1

    def describe(self) -> str:
        n = sum(self.layouts.values())
        which = (f"layout {next(iter(self.layouts))}" if len(self.layouts) == 1 else "layouts "
                 + ", ".join(f"{label} ({count})" for label, count in self.layouts.items()))
        return f"{self.file}: {n} record{'' if n == 1 else 's'}, {which}"


def _listed(files: list[str], limit: int = 5) -> str:
    return ", ".join(files[:limit]) + (f" and {len(files) - limit} more" if len(files) > limit else "")


def reading_notes(reports: list[FileReport], maps: DataMaps) -> list[str]:
    """One line per file with records that matched several layouts, and one per map that missed something."""
    notes = [f"{r.file}: {n} record(s) match several layouts, read as {label} (also {others}); a --field-map "
             "naming the fields of the one you mean chooses it" for r in reports for (label, others), n in
             r.ambiguous.items()]
    for flag, which, used_of in (("--field-map", "fields", lambda r: r.fields_used),
                                 ("--role-map", "roles", lambda r: r.roles_used)):
        entries = getattr(maps, which)
        read = [r for r in reports if r.layouts and (which == "fields" or r.conversations)]
        if not entries or not read:
            continue
        used = set().union(*(used_of(r) for r in read))
        unused = [f"{a}={b}" for a, b in entries.items() if a not in used]
        if unused:
            notes.append(f"{flag}: {', '.join(unused)} matched nothing in any file; check the names")
        missed = [r.file for r in read if not used_of(r)]
        if missed and len(unused) < len(entries):
            notes.append(f"{flag} {maps.describe(which)} matched nothing in {len(missed)} of {len(read)} file(s), "
                         f"read without it: {_listed(missed)}")
    return notes


# ---------------------------------------------------------------------------- sources and mixing


@dataclass(frozen=True)
class Source:
    """One ``--data`` entry: a path and its weight (None: every example once)."""

    path: str
    weight: float | None = None


def parse_source(entry: str) -> Source:
    """``"a.json:2"`` -> ``Source("a.json", 2.0)``; see :func:`theta_ai.config.resolve.split_weight` for paths with
    a colon (``C:\\data\\a.json`` and an existing ``notes:1.json`` stay paths)."""
    path, weight = split_weight(str(entry))
    if weight is not None and not (weight > 0 and math.isfinite(weight)):
        raise ConfigError(f"--data {entry}: the weight must be a number above 0 (leave the source out instead)")
    return Source(path, weight)


def mix(groups: Sequence[Sequence[T]], weights: Sequence[float | None], seed: int) -> tuple[list[T], list[int]]:
    """Each group contributes ``round(w * len(group))`` items (halves up): whole copies, then a seeded sample
    without replacement, kept in the group's order. Returns the mixed items and the count per group.

    >>> mix([["a", "b", "c", "d"], ["x", "y"]], [0.5, 2], seed=0)[1]
    [2, 4]
    """
    out: list[T] = []
    counts = []
    for index, (items, weight) in enumerate(zip(groups, weights)):
        total = len(items) if weight is None else math.floor(weight * len(items) + 0.5)
        copies, rest = divmod(total, len(items)) if items else (0, 0)
        chosen = sorted(random.Random(f"theta-mix:{seed}:{index}").sample(range(len(items)), rest))
        out += list(items) * copies + [items[i] for i in chosen]
        counts.append(total)
    return out, counts


@dataclass
class DataReport:
    """What a run read: a :class:`FileReport` per training and validation file, and the examples per source."""

    files: list[FileReport] = field(default_factory=list)
    val_files: list[FileReport] = field(default_factory=list)
    sources: list[tuple[Source, int, int]] = field(default_factory=list)  # source, examples before / after mixing
    seed: int = 0

    def banner_lines(self) -> list[str]:
        """The layouts (one line) and, for several or weighted sources, the training examples of each source."""
        groups: dict[str, list[int]] = {}
        for report in self.files + self.val_files:
            for label, count in report.layouts.items():
                files_records = groups.setdefault(label, [0, 0])
                files_records[0] += 1
                files_records[1] += count
        lines = ["layouts: " + "; ".join(f"{label} ({f} file{'' if f == 1 else 's'}, {n} record{'' if n == 1 else 's'})"
                                         for label, (f, n) in groups.items())] if groups else []
        weighted = any(s.weight is not None for s, _, _ in self.sources)
        if weighted or len(self.sources) > 1:
            lines.append("training examples per source" + (f" (mixed, seed {self.seed}):" if weighted else ":"))
            for source, before, after in self.sources:
                lines.append(f"  {source.path}: " + (f"{after}" if source.weight is None else
                                                     f"weight {source.weight:g}, {before} -> {after}"))
        return lines

    def file_lines(self) -> list[str]:
        """One line per file: its records and the layout it was read as (for ``--dry-run``)."""
        lines = [f"training data: {r.describe()}" for r in self.files if r.layouts]
        return lines + [f"validation data: {r.describe()}" for r in self.val_files if r.layouts]
