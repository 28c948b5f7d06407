"""Readers for every accepted data format, each producing :class:`Example` objects.

Accepted inputs (see ``docs/dataset_guide.md`` for examples of each):

* ``.json``: a list of ``{"question", "answer", "domain"?}`` records, a
  ``{"qa_pairs": [...]}`` wrapper, or a list of conversations;
* ``.jsonl`` / ``.ndjson``: one such record (or conversation) per line;
* ``.csv``: ``question`` and ``answer`` columns, optional ``domain``;
* a folder saved with ``datasets.Dataset.save_to_disk`` (read with ``datasets.load_from_disk``);
* any other folder: every supported file below it, recursively, in sorted order.

A conversation is ``{"messages" | "conversation": [{"role", "content"}, ...], "domain"?}``
or a bare list of role/content objects. The raw text formats are parsed here,
not through ``datasets.load_dataset``, because every bad record must be reported
with its file, line (or record index) and field, and Arrow's JSON reader
neither keeps line numbers nor accepts records whose extra fields differ in type.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from theta_ai.data.validate import DataError, SkippedItem, summarize_skipped

ROLES = ("system", "user", "assistant")
TEXT_SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
SUPPORTED_HELP = (
    "a JSON list of {question, answer, domain?} records, {\"qa_pairs\": [...]}, JSON Lines of such records, "
    "conversations {\"messages\"|\"conversation\": [{role, content}, ...]} or bare lists of role/content objects, "
    "CSV with question,answer[,domain] columns, or a datasets.save_to_disk folder"
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


# ---------------------------------------------------------------------------- records


def _require_text(value: Any, file: str, where: str, name: str, fix: str) -> str:
    if value is None:
        raise DataError(file, where, name, "is missing or null", fix)
    if not isinstance(value, str):
        raise DataError(file, where, name, f"must be a string, got {type(value).__name__}", fix)
    if not value.strip():
        raise DataError(file, where, name, "is empty", fix)
    return value


def _domain(record: dict, file: str, where: str) -> str:
    domain = record.get("domain")
    if domain is None:
        return "general"
    if not isinstance(domain, str) or not domain.strip():
        raise DataError(file, where, "domain", f"must be a non-empty string, got {domain!r}",
                        'write a domain name such as "programming", or remove the field')
    return domain.strip()


def _conversation(turns: Any, file: str, where: str, key: str) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise DataError(file, where, key, "must be a non-empty list of {role, content} objects",
                        'write e.g. [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]')
    messages = []
    for i, turn in enumerate(turns):
        name = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise DataError(file, where, name, f"must be an object with role and content, got {type(turn).__name__}",
                            'write {"role": "user", "content": "..."}')
        role = turn.get("role")
        if role not in ROLES:
            raise DataError(file, where, f"{name}.role", f"unknown role {role!r}",
                            f"use one of {', '.join(ROLES)}")
        content = turn.get("content")
        if role == "system" and isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        content = _require_text(content, file, where, f"{name}.content", "give every turn its text as a string")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(file, where, key, "has no assistant turn, so there is nothing to learn",
                        'add at least one {"role": "assistant", "content": ...} turn')
    return messages


def record_to_example(record: Any, file: str, where: str) -> Example:
    """Turn one raw record (object or bare conversation list) into an :class:`Example`, or raise DataError."""
    if isinstance(record, list):
        return Example(_conversation(record, file, where, "conversation"), source=f"{file}, {where}")
    if not isinstance(record, dict):
        raise DataError(file, where, None, f"a record must be a JSON object, got {type(record).__name__}",
                        'write each record as {"question": "...", "answer": "..."}')
    for key in ("messages", "conversation"):
        if key in record:
            messages = _conversation(record[key], file, where, key)
            meta = {k: v for k, v in record.items() if k not in (key, "domain")}
            return Example(messages, _domain(record, file, where), f"{file}, {where}", meta)
    if "question" not in record and "answer" not in record:
        raise DataError(file, where, None, f"record has neither question/answer nor messages (keys: {sorted(record)[:8]})",
                        f"supported formats are {SUPPORTED_HELP}")
    question = _require_text(record.get("question"), file, where, "question", "give the question as a non-empty string")
    answer = _require_text(record.get("answer"), file, where, "answer", "give the answer as a non-empty string")
    meta = {k: v for k, v in record.items() if k not in ("question", "answer", "domain")}
    return Example.from_qa(question, answer, _domain(record, file, where), source=f"{file}, {where}", meta=meta)


# ---------------------------------------------------------------------------- files


def _read_text(path: Path) -> str:
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


def _json_error(file: str, exc: json.JSONDecodeError, line_offset: int = 0) -> DataError:
    where = f"line {exc.lineno + line_offset}, column {exc.colno}"
    return DataError(file, where, None, f"invalid JSON ({exc.msg})",
                     "fix the JSON syntax there (a missing comma, quote or bracket?)")


def _parse_json(text: str, file: str, where_offset: int = 0) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(file, exc, where_offset) from None
    except RecursionError:
        raise DataError(file, None, None, "is nested too deeply to parse", "flatten the structure to the documented format") from None


def _json_records(path: Path) -> Iterator[tuple[str, Any]]:
    file = str(path)
    data = _parse_json(_read_text(path), file)
    if isinstance(data, dict) and "qa_pairs" in data:
        data = data["qa_pairs"]
        if not isinstance(data, list):
            raise DataError(file, None, "qa_pairs", "must be a list of records", "write \"qa_pairs\": [{...}, ...]")
    elif isinstance(data, dict) and ("messages" in data or "conversation" in data):
        data = [data]
    if not isinstance(data, list):
        raise DataError(file, None, None, f"top-level {type(data).__name__} is not a supported layout",
                        f"supported formats are {SUPPORTED_HELP}")
    if not data:
        raise DataError(file, None, None, "holds an empty list", "add records or leave the file out")
    for i, record in enumerate(data):
        yield f"record index {i}", record


def _jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    file = str(path)
    # split on "\n" only: str.splitlines() would also split inside strings at U+2028, U+0085, ...
    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"line {lineno}", _json_error(file, exc, lineno - 1)
            continue
        except RecursionError:
            yield f"line {lineno}", DataError(file, f"line {lineno}", None, "is nested too deeply to parse",
                                              "write one flat record per line")
            continue
        yield f"line {lineno}", record


def _csv_records(path: Path) -> Iterator[tuple[str, Any]]:
    file = str(path)
    text = _read_text(path)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # long answers; the default cap is 128 KiB
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        raise DataError(file, "line 1", None, f"unreadable CSV header ({exc})", "write a header row: question,answer") from None
    missing = [c for c in ("question", "answer") if c not in header]
    if missing:
        raise DataError(file, "line 1", None, f"CSV header {header} lacks column(s) {missing}",
                        "add a header row with question,answer (and optionally domain)")
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
        if "domain" in record and not record["domain"].strip():
            del record["domain"]  # an empty domain cell means the default domain
        yield f"line {start}", record


def _saved_dataset_records(path: Path) -> Iterator[tuple[str, Any]]:
    import datasets  # heavy import, only when a saved dataset is read

    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises several types for damaged folders
        raise DataError(str(path), None, None, f"cannot be loaded with datasets.load_from_disk ({exc})",
                        "re-save it with Dataset.save_to_disk") from None
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
            elif entry.suffix.lower() in TEXT_SUFFIXES:
                yield entry

    yield from walk(root)


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise DataError(str(path), None, None, f"is a DatasetDict with splits {splits}",
                            f"pass one split's folder, e.g. {path / (splits[0] if splits else 'train')}")
        return _saved_dataset_records(path)
    kind = TEXT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(str(path), None, None, f"has an unsupported extension {path.suffix!r}",
                        f"use .json, .jsonl, .ndjson or .csv; supported formats are {SUPPORTED_HELP}")
    return {"json": _json_records, "jsonl": _jsonl_records, "csv": _csv_records}[kind](path)


def read_file(path: str | os.PathLike, skip_invalid: bool = False) -> LoadResult:
    """Read one file (or saved dataset folder) into examples.

    Raises :class:`DataError` on the first problem, unless ``skip_invalid`` is set, in which case
    bad records (or a whole unreadable file) are returned in ``LoadResult.skipped``.
    """
    path = Path(path)
    file = str(path)
    result = LoadResult([], [], [file])
    try:
        for where, record in _records(path):
            try:
                if isinstance(record, DataError):
                    raise record
                result.examples.append(record_to_example(record, file, where))
            except DataError as err:
                if not skip_invalid:
                    raise
                result.skipped.append(SkippedItem(err))
    except DataError as err:
        if not skip_invalid:
            raise
        return LoadResult([], [SkippedItem(err, whole_file=True)], [file])
    if not result.examples and not result.skipped:
        err = DataError(file, None, None, "holds no records", "add records or leave the file out")
        if not skip_invalid:
            raise err
        return LoadResult([], [SkippedItem(err, whole_file=True)], [file])
    return result


def load_examples(paths: str | os.PathLike | list, skip_invalid: bool = False) -> LoadResult:
    """Read every path (file, saved dataset or folder, recursively) into one :class:`LoadResult`.

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
                            f"put .json, .jsonl or .csv files there; supported formats are {SUPPORTED_HELP}")
        for target in targets:
            part = read_file(target, skip_invalid)
            total.examples += part.examples
            total.skipped += part.skipped
            total.files += part.files
    if not total.examples:
        # every item was skipped: the summary goes into the error, as the caller never gets the LoadResult
        summary = "".join(f"\n{line}" for line in summarize_skipped(total.skipped))
        raise DataError(", ".join(str(p) for p in paths), None, None, f"no usable examples were found{summary}",
                        "fix or leave out the skipped items listed above")
    return total
