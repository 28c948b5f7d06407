"""Readers for every accepted data format, each producing :class:`Example` objects.

Accepted inputs (see ``docs/dataset_guide.md`` for examples of each):

* ``.json``: a list of records or conversations, a ``{"qa_pairs": [...]}`` wrapper, or one conversation object;
* ``.jsonl`` / ``.ndjson``: one record (or conversation) per line;
* ``.csv``: one record per row (``question,answer[,domain]``, Alpaca's ``instruction,input,output``, mapped names);
* ``.parquet`` and ``.arrow`` files and ``datasets.Dataset.save_to_disk`` folders, read with ``datasets``;
* any other folder: every supported file below it, recursively, in sorted order.

A record is a question/answer pair, an Alpaca record or a conversation (``messages``, ShareGPT ``conversations``,
a bare list of turns); :mod:`theta_ai.data.mapping` says which, reads other field and role names, and records the
layout of every file. Text formats are parsed here, not with ``datasets.load_dataset``: every bad record is reported
with its file, line (or record index) and field, and Arrow's JSON reader keeps no line numbers.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from theta_ai.data.mapping import NO_MAPS, DataMaps, FileReport, record_layouts, turn_style, unknown_record_fix
from theta_ai.data.validate import (DataError, SkippedItem, check_domain, json_error, parse_json, read_text,
                                   require_text, summarize_skipped)

TEXT_SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
TABLE_SUFFIXES = {".parquet": "Parquet", ".arrow": "Arrow"}  # read with datasets, rows named "row N"
SUPPORTED_HELP = (
    "a JSON list of {question, answer, domain?} records, {\"qa_pairs\": [...]}, JSON Lines of such records, "
    "conversations {\"messages\"|\"conversation\": [{role, content}, ...]} or bare lists of role/content objects, "
    "Alpaca {instruction, input?, output} and ShareGPT {conversations: [{from, value}, ...]} records, other names "
    "through --field-map/--role-map, CSV with question,answer[,domain] columns, Parquet or Arrow files, or a "
    "datasets.save_to_disk folder"
)


@dataclass
class Example:
    """One normalized training or evaluation example.

    ``messages`` is a chat: ``[{"role": "user", "content": ...}, {"role": "assistant", ...}, ...]``.
    A question/answer record becomes a two-message chat. ``source`` says where it came from
    (``file, line 3``) and ``meta`` keeps any extra fields of the record.
    """

    messages: list[dict[str, str]]
    domain: str = "general"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The first user turn (the question of a question/answer record)."""
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")

    @property
    def answer(self) -> str:
        """The last assistant turn (the reference answer)."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")

    @classmethod
    def from_qa(cls, question: str, answer: str, domain: str = "general", **kw: Any) -> "Example":
        return cls([{"role": "user", "content": question}, {"role": "assistant", "content": answer}], domain, **kw)


@dataclass
class LoadResult:
    """What :func:`load_examples` read: the examples, what was skipped, and the files read."""

    examples: list[Example]
    skipped: list[SkippedItem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    reports: list[FileReport] = field(default_factory=list)  # per file: examples per layout, map use
    per_path: list[int] = field(default_factory=list)  # examples read from each path given to load_examples

    @property
    def layouts(self) -> dict[str, dict[str, int]]:
        """File -> {layout it was read as: examples}, e.g. ``{"a.json": {"Alpaca (instruction/input/output)": 3}}``."""
        return {r.file: dict(r.layouts) for r in self.reports if r.layouts}


# ---------------------------------------------------------------------------- records


def _turn_text(role: str, value: Any, file: str, where: str, name: str) -> str:
    if role == "system" and isinstance(value, str):
        return value  # a system turn may be empty
    return require_text(value, file, where, name, "give every turn its text as a string")


def _conversation(turns: Any, file: str, where: str, key: str, maps: DataMaps,
                  report: FileReport | None) -> tuple[list[dict[str, str]], str]:
    """The messages of a list of turns (role/content, from/value, mapped names or role-keyed pairs) and their styles."""
    if not isinstance(turns, list) or not turns:
        raise DataError(file, where, key, "must be a non-empty list of {role, content} objects",
                        'write e.g. [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]')
    messages, styles = [], []
    for i, turn in enumerate(turns):
        name = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise DataError(file, where, name, f"must be an object with role and content, got {type(turn).__name__}",
                            'write {"role": "user", "content": "..."}')
        style = turn_style(turn, maps)
        if style is None:
            raise DataError(file, where, name, f"has neither role/content nor from/value (keys: {sorted(turn)[:8]})",
                            "name its fields with --field-map role=NAME,content=NAME")
        styles += [style.label] if style.label not in styles else []
        if report is not None and maps.fields:
            report.fields_used |= {f for f in ("role", "content") if maps.fields.get(f) in turn}
        if style.role is None:  # a pair {"user": "...", "assistant": "..."}, in the order written; null is absent
            for raw, value in turn.items():
                if value is not None and maps.role_of(raw, style.label):
                    role = maps.turn_role(raw, style.label, file, where, name, report)
                    messages.append({"role": role, "content": _turn_text(role, value, file, where, f"{name}.{raw}")})
            continue
        role = maps.turn_role(turn.get(style.role), style.label, file, where, f"{name}.{style.role}", report)
        messages.append({"role": role, "content": _turn_text(role, turn.get(style.content), file, where,
                                                             f"{name}.{style.content}")})
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(file, where, key, "has no assistant turn, so there is nothing to learn",
                        'add at least one {"role": "assistant", "content": ...} turn')
    return messages, ", ".join(styles)


def _question_answer(record: dict, file: str, where: str, question: str, extra: str | None,
                     answer: str) -> list[dict[str, str]]:
    """A question/answer (or Alpaca) record's two turns; a non-empty ``extra`` (Alpaca's input) follows the
    question after a blank line: ``"instruction\n\ninput"``."""
    q = require_text(record.get(question), file, where, question, f"give the {question} as a non-empty string")
    a = require_text(record.get(answer), file, where, answer, f"give the {answer} as a non-empty string")
    more = record.get(extra) if extra else None
    if more is not None and not isinstance(more, str):
        raise DataError(file, where, extra, f"must be a string, got {type(more).__name__}",
                        f"give the {extra} as a string, or leave it empty")
    if more and more.strip():
        q = f"{q}\n\n{more}"
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def record_to_example(record: Any, file: str, where: str, maps: DataMaps | None = None,
                      report: FileReport | None = None) -> Example:
    """Turn one raw record (object or bare conversation list) into an :class:`Example`, or raise DataError.

    ``maps`` reads other field and role names; ``report`` (the file's) counts the layout the record was read as.
    """
    maps = maps or NO_MAPS
    others: list = []
    if isinstance(record, list):
        messages, styles = _conversation(record, file, where, "conversation", maps, report)
        example, label = Example(messages, source=f"{file}, {where}"), f"turn list ({styles})"
    elif not isinstance(record, dict):
        raise DataError(file, where, None, f"a record must be a JSON object, got {type(record).__name__}",
                        'write each record as {"question": "...", "answer": "..."}')
    else:
        layouts = record_layouts(record, maps)
        if not layouts:
            raise DataError(file, where, None,
                            f"record has neither question/answer nor messages (keys: {sorted(record)[:8]})",
                            unknown_record_fix(record, maps, f"supported formats are {SUPPORTED_HELP}"))
        layout, others = layouts[0], ([] if layouts[0].mapped else layouts[1:])
        if layout.key:
            messages, styles = _conversation(record[layout.key], file, where, layout.key, maps, report)
            label = f"ShareGPT {layout.key} (from/value)" if styles == "from/value" else f"{layout.key} ({styles})"
        else:
            messages = _question_answer(record, file, where, layout.question, layout.input, layout.answer)
            label = layout.label
        domain_key = maps.fields.get("domain", "domain")
        domain = check_domain(record.get(domain_key), file, where, domain_key)
        used = {layout.key, layout.question, layout.input, layout.answer, domain_key}
        example = Example(messages, domain, f"{file}, {where}", {k: v for k, v in record.items() if k not in used})
    if report is not None:
        report.add(label, record, maps, others, turns=isinstance(record, list) or bool(layout.key))
    return example


# ---------------------------------------------------------------------------- files


def _json_records(path: Path, maps: DataMaps) -> Iterator[tuple[str, Any]]:
    file = str(path)
    data = parse_json(read_text(path), file)
    if isinstance(data, dict) and "qa_pairs" in data:
        data = data["qa_pairs"]
        if not isinstance(data, list):
            raise DataError(file, None, "qa_pairs", "must be a list of records", "write \"qa_pairs\": [{...}, ...]")
    elif isinstance(data, dict) and any(layout.key for layout in record_layouts(data, maps)):
        data = [data]  # one conversation object
    if not isinstance(data, list):
        raise DataError(file, None, None, f"top-level {type(data).__name__} is not a supported layout",
                        f"supported formats are {SUPPORTED_HELP}")
    if not data:
        raise DataError(file, None, None, "holds an empty list", "add records or leave the file out")
    for i, record in enumerate(data):
        yield f"record index {i}", record


def _jsonl_records(path: Path, maps: DataMaps) -> Iterator[tuple[str, Any]]:
    file = str(path)
    # split on "\n" only: str.splitlines() would also split inside strings at U+2028, U+0085, ...
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"line {lineno}", json_error(file, exc, lineno - 1)
            continue
        except RecursionError:
            yield f"line {lineno}", DataError(file, f"line {lineno}", None, "is nested too deeply to parse",
                                              "write one flat record per line")
            continue
        yield f"line {lineno}", record


def _csv_records(path: Path, maps: DataMaps) -> Iterator[tuple[str, Any]]:
    file = str(path)
    text = read_text(path)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # long answers; the default cap is 128 KiB
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        raise DataError(file, "line 1", None, f"unreadable CSV header ({exc})", "write a header row: question,answer") from None
    layouts = [layout for layout in record_layouts(dict.fromkeys(header, ""), maps) if not layout.key]
    q, a = (layouts[0].question, layouts[0].answer) if layouts else ("question", "answer")
    missing = [c for c in (q, a) if c not in header]
    if missing:
        raise DataError(file, "line 1", None, f"CSV header {header} lacks column(s) {missing}",
                        f"add a header row with {q},{a} (and optionally domain)")
    domain = maps.fields.get("domain", "domain")
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield f"line {start}", DataError(file, f"line {start}", None, f"unreadable CSV row ({exc})",
                                             "fix the quoting on that row")
            continue
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            yield f"line {start}", DataError(file, f"line {start}", None,
                                             f"row has {len(row)} fields but the header has {len(header)}",
                                             "quote fields that contain commas, or fix the row")
            continue
        record = dict(zip(header, row))
        if domain in record and not record[domain].strip():
            del record[domain]  # an empty domain cell means the default domain
        yield f"line {start}", record


def _dataset_rows(path: Path, maps: DataMaps) -> Iterator[tuple[str, Any]]:
    """The rows of a saved dataset folder, a .parquet or an .arrow file, read with ``datasets`` (offline, no cache)."""
    import datasets  # heavy imports, only when such a file is read
    import pyarrow as pa

    kind = TABLE_SUFFIXES.get(path.suffix.lower()) if path.is_file() else None
    try:
        if kind == "Parquet":
            import pyarrow.parquet as pq

            dataset = datasets.Dataset(pq.read_table(str(path)))
        elif kind == "Arrow":
            try:
                dataset = datasets.Dataset.from_file(str(path))  # the Arrow stream format datasets writes
            except pa.ArrowInvalid:  # the Arrow IPC file format (pyarrow.ipc.new_file, Feather v2)
                dataset = datasets.Dataset(pa.ipc.open_file(str(path)).read_all())
        else:
            dataset = datasets.load_from_disk(str(path))
    except Exception as exc:  # pyarrow and datasets raise several types for damaged files
        problem, fix = {"Parquet": ("as Parquet", "re-write it, e.g. with Dataset.to_parquet or DataFrame.to_parquet"),
                        "Arrow": ("as Arrow", "re-write it, e.g. with pyarrow.ipc.new_file or Dataset.save_to_disk"),
                        None: ("with datasets.load_from_disk", "re-save it with Dataset.save_to_disk")}[kind]
        raise DataError(str(path), None, None, f"cannot be {'read' if kind else 'loaded'} {problem} ({exc})",
                        fix) from None
    for i, record in enumerate(dataset):
        yield f"row {i}", record


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def _files_under(root: Path) -> Iterator[Path]:
    """Supported files and saved datasets below ``root``, sorted, following no symlink loops."""
    seen: set[tuple[int, int]] = set()

    def walk(folder: Path) -> Iterator[Path]:
        try:
            st = folder.stat()
        except OSError as exc:
            raise DataError(str(folder), None, None, f"cannot be read ({exc.strerror})", "check the folder") from None
        if (st.st_dev, st.st_ino) in seen:
            return  # a symlink loop: this folder was already visited
        seen.add((st.st_dev, st.st_ino))
        if _is_saved_dataset(folder) or (folder / "dataset_dict.json").is_file():
            yield folder  # read_file reads a saved Dataset and refuses a DatasetDict with its documented error
            return
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            raise DataError(str(folder), None, None, f"cannot be listed ({exc.strerror})", "fix its permissions") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                yield from walk(entry)
            elif entry.suffix.lower() in TEXT_SUFFIXES or entry.suffix.lower() in TABLE_SUFFIXES:
                yield entry

    yield from walk(root)


def _records(path: Path, maps: DataMaps) -> Iterator[tuple[str, Any]]:
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise DataError(str(path), None, None, f"is a DatasetDict with splits {splits}",
                            f"pass one split's folder, e.g. {path / (splits[0] if splits else 'train')}")
        return _dataset_rows(path, maps)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return _dataset_rows(path, maps)
    kind = TEXT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(str(path), None, None, f"has an unsupported extension {path.suffix!r}",
                        f"use .json, .jsonl, .ndjson, .csv, .parquet or .arrow; supported formats are {SUPPORTED_HELP}")
    return {"json": _json_records, "jsonl": _jsonl_records, "csv": _csv_records}[kind](path, maps)


def read_file(path: str | os.PathLike, skip_invalid: bool = False, maps: DataMaps | None = None) -> LoadResult:
    """Read one file (or saved dataset folder) into examples; ``maps`` reads other field and role names.

    Raises :class:`DataError` on the first problem, unless ``skip_invalid`` is set, in which case
    bad records (or a whole unreadable file) are returned in ``LoadResult.skipped``.
    """
    path = Path(path)
    file = str(path)
    maps = maps or NO_MAPS
    report = FileReport(file)
    result = LoadResult([], [], [file], [report])
    try:
        for where, record in _records(path, maps):
            try:
                if isinstance(record, DataError):
                    raise record
                result.examples.append(record_to_example(record, file, where, maps, report))
            except DataError as err:
                if not skip_invalid:
                    raise
                result.skipped.append(SkippedItem(err))
    except DataError as err:
        if not skip_invalid:
            raise
        return LoadResult([], [SkippedItem(err, whole_file=True)], [file], [FileReport(file)])
    if not result.examples and not result.skipped:
        err = DataError(file, None, None, "holds no records", "add records or leave the file out")
        if not skip_invalid:
            raise err
        return LoadResult([], [SkippedItem(err, whole_file=True)], [file], [FileReport(file)])
    return result


def load_examples(paths: str | os.PathLike | list, skip_invalid: bool = False,
                  maps: DataMaps | None = None) -> LoadResult:
    """Read every path (file, saved dataset or folder, recursively) into one :class:`LoadResult`.

    ``maps`` (:func:`theta_ai.data.mapping.parse_maps`) reads fields and roles under other names;
    ``LoadResult.layouts`` says which layout each file was read as.

    >>> result = load_examples(["examples/data/theta_sample_train.json"])  # doctest: +SKIP
    >>> result.examples[0].question  # doctest: +SKIP
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    total = LoadResult([], [], [])
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(str(path), None, None, "does not exist", "check the path passed to --data / --val-data")
        targets = [path] if path.is_file() or _is_saved_dataset(path) or (path / "dataset_dict.json").is_file() else list(_files_under(path))
        if not targets:
            raise DataError(str(path), None, None, "holds no supported data files",
                            f"put .json, .jsonl, .csv, .parquet or .arrow files there; supported formats are {SUPPORTED_HELP}")
        total.per_path.append(len(total.examples))
        for target in targets:
            part = read_file(target, skip_invalid, maps)
            total.examples += part.examples
            total.skipped += part.skipped
            total.files += part.files
            total.reports += part.reports
        total.per_path[-1] = len(total.examples) - total.per_path[-1]
    if not total.examples:
        # every item was skipped: the summary goes into the error, as the caller never gets the LoadResult
        summary = "".join(f"\n{line}" for line in summarize_skipped(total.skipped))
        raise DataError(", ".join(str(p) for p in paths), None, None, f"no usable examples were found{summary}",
                        "fix or leave out the skipped items listed above")
    return total
