"""Every accepted data format, every error message a user can meet, --skip-invalid, duplicate and leakage reports.

The expected messages below are the documentation of the loader's errors (``docs/dataset_guide.md``
copies them): a change to a message must change these tests.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theta_ai.data import (DataError, Example, SkippedItem, find_duplicates, find_leakage, load_examples, read_file,
                           summarize_skipped)
from theta_ai.data.validate import OverlapReport, normalize_question

SUPPORTED = ('a JSON list of {question, answer, domain?} records, {"qa_pairs": [...]}, JSON Lines of such records, '
             'conversations {"messages"|"conversation": [{role, content}, ...]} or bare lists of role/content objects, '
             'Alpaca {instruction, input?, output} and ShareGPT {conversations: [{from, value}, ...]} records, other '
             'names through --field-map/--role-map, CSV with question,answer[,domain] columns, Parquet or Arrow '
             'files, or a datasets.save_to_disk folder')
FIX_SUPPORTED = f"supported formats are {SUPPORTED}"
FIX_JSON = "fix the JSON syntax there (a missing comma, quote or bracket?)"
FIX_UTF8 = "re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8"
FIX_NUL = "remove the NUL bytes or re-export the file as text"
FIX_EMPTY = "add records or leave the file out"
FIX_CONV = 'write e.g. [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]'
FIX_ROLE = "use one of system, user, assistant"
FIX_DOMAIN = 'write a domain name such as "programming", or remove the field'
FIX_QUESTION = "give the question as a non-empty string"
FIX_ANSWER = "give the answer as a non-empty string"
FIX_TURN = "give every turn its text as a string"
FIX_ROW = "quote fields that contain commas, or fix the row"
FIX_ALL_SKIPPED = "fix or leave out the skipped items listed above"

# name -> (where, field, problem, fix, whole_file): what load_examples([tests/data/bad/<name>]) raises,
# and whether --skip-invalid drops the whole file (True) or just the record (False).
BAD = {
    # JSON syntax and layout
    "json_truncated.json": ("line 1, column 64", None, "invalid JSON (Expecting ',' delimiter)", FIX_JSON, True),
    "json_empty.json": (None, None, "is empty", FIX_EMPTY, True),
    "json_whitespace.json": (None, None, "is empty", FIX_EMPTY, True),
    "json_top_level_string.json": (None, None, "top-level str is not a supported layout", FIX_SUPPORTED, True),
    "json_top_level_number.json": (None, None, "top-level int is not a supported layout", FIX_SUPPORTED, True),
    "json_unsupported_top_dict.json": (None, None, "top-level dict is not a supported layout", FIX_SUPPORTED, True),
    "json_empty_list.json": (None, None, "holds an empty list", FIX_EMPTY, True),
    "json_qa_pairs_not_list.json": (None, "qa_pairs", "must be a list of records",
                                    'write "qa_pairs": [{...}, ...]', True),
    "json_qa_pairs_empty.json": (None, None, "holds an empty list", FIX_EMPTY, True),
    "json_deeply_nested.json": (None, None, "is nested too deeply to parse",
                                "flatten the structure to the documented format", True),
    # JSON records
    "json_unknown_keys.json": ("record index 0", None,
                               "record has neither question/answer nor messages (keys: ['foo'])", FIX_SUPPORTED, False),
    "json_question_number.json": ("record index 0", "question", "must be a string, got int", FIX_QUESTION, False),
    "json_answer_list.json": ("record index 0", "answer", "must be a string, got list", FIX_ANSWER, False),
    "json_answer_null.json": ("record index 1", "answer", "is missing or null", FIX_ANSWER, False),
    "json_question_missing.json": ("record index 0", "question", "is missing or null", FIX_QUESTION, False),
    "json_answer_empty.json": ("record index 0", "answer", "is empty", FIX_ANSWER, False),
    "json_record_not_object.json": ("record index 1", None, "a record must be a JSON object, got str",
                                    'write each record as {"question": "...", "answer": "..."}', False),
    "json_domain_number.json": ("record index 0", "domain", "must be a non-empty string, got 7", FIX_DOMAIN, False),
    "json_domain_empty.json": ("record index 0", "domain", "must be a non-empty string, got ' '", FIX_DOMAIN, False),
    # conversations
    "conv_unknown_role.json": ("record index 0", "messages[1].role", "unknown role 'bot'", FIX_ROLE, False),
    "conv_role_missing.json": ("record index 0", "messages[0].role", "unknown role None", FIX_ROLE, False),
    "conv_no_assistant.json": ("record index 0", "messages", "has no assistant turn, so there is nothing to learn",
                               'add at least one {"role": "assistant", "content": ...} turn', False),
    "conv_messages_not_list.json": ("record index 0", "messages",
                                    "must be a non-empty list of {role, content} objects", FIX_CONV, False),
    "conv_messages_empty.json": ("record index 0", "messages",
                                 "must be a non-empty list of {role, content} objects", FIX_CONV, False),
    "conv_turn_not_object.json": ("record index 0", "conversation[0]",
                                  "must be an object with role and content, got str",
                                  'write {"role": "user", "content": "..."}', False),
    "conv_content_null.json": ("record index 0", "conversation[1].content", "is missing or null", FIX_TURN, False),
    # encodings and binary data
    "json_latin1.json": ("line 1 (byte 34)", None, "is not valid UTF-8 (byte 0xe9)", FIX_UTF8, True),
    "json_bom_latin1.json": ("line 1 (byte 21)", None, "is not valid UTF-8 (byte 0xe9)", FIX_UTF8, True),
    "jsonl_mixed_encoding.jsonl": ("line 2 (byte 88)", None, "is not valid UTF-8 (byte 0xe9)", FIX_UTF8, True),
    "json_nul_byte.json": ("line 2", None, "contains a NUL byte (binary data?)", FIX_NUL, True),
    # JSON Lines
    "jsonl_bad_line_middle.jsonl": ("line 3, column 36", None, "invalid JSON (Expecting ',' delimiter)",
                                    FIX_JSON, False),
    "jsonl_mixed_errors.jsonl": ("line 2", "question", "must be a string, got int", FIX_QUESTION, False),
    "ndjson_empty_question.ndjson": ("line 1", "question", "is empty", FIX_QUESTION, False),
    # CSV
    "csv_ragged.csv": ("line 3", None, "row has 3 fields but the header has 2", FIX_ROW, False),
    "csv_unterminated_quote.csv": ("line 3", None, "row has 1 fields but the header has 2", FIX_ROW, False),
    "csv_missing_answer_column.csv": ("line 1", None, "CSV header ['question', 'reply'] lacks column(s) ['answer']",
                                      "add a header row with question,answer (and optionally domain)", True),
    "csv_nul_byte.csv": ("line 3", None, "contains a NUL byte (binary data?)", FIX_NUL, True),
    "csv_header_only.csv": (None, None, "holds no records", FIX_EMPTY, True),
    "csv_empty_answer.csv": ("line 2", "answer", "is empty", FIX_ANSWER, False),
    # unsupported
    "unsupported_extension.txt": (None, None, "has an unsupported extension '.txt'",
                                  f"use .json, .jsonl, .ndjson, .csv, .parquet or .arrow; {FIX_SUPPORTED}", True),
}

# Bad files that also hold good records: what --skip-invalid keeps (questions, in order) and its per-file reason text.
PARTIAL = {
    "json_answer_null.json": (["What is TCP?"], '1 x "answer" is missing or null'),
    "json_record_not_object.json": (["What is TCP?", "What is TCP?"], "1 x a record must be a JSON object, got str"),
    "jsonl_bad_line_middle.jsonl": (["Q1?", "Q2?", "Q4?", "Q5?"], "1 x invalid JSON (Expecting ',' delimiter)"),
    "jsonl_mixed_errors.jsonl": (["Q1?", "Q5?", "Q9?"],
                                 "1 x \"question\" must be a string, got int; 1 x a record must be a JSON object, got int; "
                                 "1 x \"messages[1].role\" unknown role 'robot'; "
                                 "1 x invalid JSON (Expecting ',' delimiter); 1 x \"answer\" is missing or null"),
    "csv_ragged.csv": (["What is TCP?", "What is IP?"], "1 x row has 3 fields but the header has 2"),
    "csv_unterminated_quote.csv": (["What is TCP?"], "1 x row has 1 fields but the header has 2"),
}


def bad(data_dir: Path, name: str) -> Path:
    return data_dir / "bad" / name


def error_of(paths, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        load_examples(paths, **kw)
    return info.value


def expected_message(path, where, field, problem, fix) -> str:
    place = str(path) + (f", {where}" if where else "") + (f', field "{field}"' if field else "")
    return f"{place}: {problem}. Fix: {fix}."


def summary(examples):
    return [(e.messages, e.domain, e.source, e.meta) for e in examples]


def qa(question, answer):
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


# ------------------------------------------------------------------------------------------ bad files


def test_every_bad_file_has_an_expected_error(data_dir):
    names = sorted(p.name for p in (data_dir / "bad").iterdir())
    assert names == sorted(BAD)
    assert len(names) >= 30


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_raises_exact_error(data_dir, name):
    where, field, problem, fix, _ = BAD[name]
    path = bad(data_dir, name)
    err = error_of([path])
    assert (err.file, err.where, err.field, err.problem, err.fix) == (str(path), where, field, problem, fix)
    assert str(err) == expected_message(path, where, field, problem, fix)


def test_a_few_messages_word_for_word(data_dir):
    """The full text, as a user reads it after ``theta-train: error:``."""
    p = bad(data_dir, "json_truncated.json")
    assert str(error_of(p)) == (f"{p}, line 1, column 64: invalid JSON (Expecting ',' delimiter). "
                                "Fix: fix the JSON syntax there (a missing comma, quote or bracket?).")
    p = bad(data_dir, "json_question_number.json")
    assert str(error_of(p)) == (f'{p}, record index 0, field "question": must be a string, got int. '
                                "Fix: give the question as a non-empty string.")
    p = bad(data_dir, "conv_unknown_role.json")
    assert str(error_of(p)) == (f"{p}, record index 0, field \"messages[1].role\": unknown role 'bot'. "
                                "Fix: use one of system, user, assistant.")
    p = bad(data_dir, "json_latin1.json")
    assert str(error_of(p)) == (f"{p}, line 1 (byte 34): is not valid UTF-8 (byte 0xe9). "
                                "Fix: re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8.")
    p = bad(data_dir, "csv_missing_answer_column.csv")
    assert str(error_of(p)) == (f"{p}, line 1: CSV header ['question', 'reply'] lacks column(s) ['answer']. "
                                "Fix: add a header row with question,answer (and optionally domain).")
    p = bad(data_dir, "json_unsupported_top_dict.json")
    assert str(error_of(p)) == f"{p}: top-level dict is not a supported layout. Fix: supported formats are {SUPPORTED}."


def test_bom_does_not_shift_the_reported_byte(data_dir):
    """The byte offset counts the BOM, and the byte shown is the bad one (0xe9 = latin-1 'é')."""
    raw = bad(data_dir, "json_bom_latin1.json").read_bytes()
    assert raw[:3] == b"\xef\xbb\xbf" and raw[21] == 0xE9
    assert error_of(bad(data_dir, "json_bom_latin1.json")).where == "line 1 (byte 21)"


@pytest.mark.parametrize("name", sorted(BAD))
def test_skip_invalid_keeps_exactly_the_good_records(data_dir, name):
    where, field, problem, fix, whole_file = BAD[name]
    path = bad(data_dir, name)
    if name in PARTIAL:
        kept, detail = PARTIAL[name]
        result = load_examples([path], skip_invalid=True)
        assert [e.question for e in result.examples] == kept
        assert result.files == [str(path)]
        n_skipped = len(result.skipped)
        assert summarize_skipped(result.skipped) == [
            f"--skip-invalid: skipped {n_skipped} item(s) in 1 file(s):",
            f"  {path}: {n_skipped} skipped ({detail})",
        ]
        assert all(not item.whole_file for item in result.skipped)
        return
    # nothing usable: the error carries the skip summary, as the caller never gets a LoadResult
    reason = ("whole file: " if whole_file else "") + (f'"{field}" ' if field else "") + problem
    err = error_of([path], skip_invalid=True)
    assert str(err) == (f"{path}: no usable examples were found\n"
                        "--skip-invalid: skipped 1 item(s) in 1 file(s):\n"
                        f"  {path}: 1 skipped (1 x {reason}). Fix: {FIX_ALL_SKIPPED}.")


def test_skip_invalid_reports_records_and_files(data_dir):
    good = data_dir / "good" / "qa.ndjson"
    empty, mixed = bad(data_dir, "json_empty.json"), bad(data_dir, "jsonl_mixed_errors.jsonl")
    result = load_examples([empty, good, mixed], skip_invalid=True)
    assert [e.question for e in result.examples] == ["What is a socket?", "What is a disk?", "Q1?", "Q5?", "Q9?"]
    assert [e.source for e in result.examples[2:]] == [f"{mixed}, line 1", f"{mixed}, line 5", f"{mixed}, line 9"]
    assert result.examples[3].domain == "networking"
    assert result.files == [str(empty), str(good), str(mixed)]
    assert [str(item) for item in result.skipped] == [
        f"skipped file: {empty}: is empty. Fix: add records or leave the file out.",
        f'skipped record: {mixed}, line 2, field "question": must be a string, got int. '
        "Fix: give the question as a non-empty string.",
        f"skipped record: {mixed}, line 4: a record must be a JSON object, got int. "
        'Fix: write each record as {"question": "...", "answer": "..."}.',
        f"skipped record: {mixed}, line 6, field \"messages[1].role\": unknown role 'robot'. "
        "Fix: use one of system, user, assistant.",
        f"skipped record: {mixed}, line 7, column 20: invalid JSON (Expecting ',' delimiter). Fix: {FIX_JSON}.",
        f'skipped record: {mixed}, line 8, field "answer": is missing or null. '
        "Fix: give the answer as a non-empty string.",
    ]
    assert summarize_skipped(result.skipped) == [
        "--skip-invalid: skipped 6 item(s) in 2 file(s):",
        f"  {empty}: 1 skipped (1 x whole file: is empty)",
        f"  {mixed}: 5 skipped ({PARTIAL['jsonl_mixed_errors.jsonl'][1]})",
    ]
    assert summarize_skipped([]) == []


def test_skip_invalid_counts_repeated_reasons(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"question": "a", "answer": ""}, {"question": "b", "answer": "B"}, {"question": "c", "answer": " "},
        {"question": "d", "answer": None}, {"question": "e", "answer": "\t"}]) + "\n")
    result = load_examples(path, skip_invalid=True)
    assert [e.question for e in result.examples] == ["b"]
    assert summarize_skipped(result.skipped) == [
        "--skip-invalid: skipped 4 item(s) in 1 file(s):",
        f'  {path}: 4 skipped (3 x "answer" is empty; 1 x "answer" is missing or null)',
    ]


def test_bad_folder_with_skip_invalid(data_dir):
    """The whole bad/ folder: the .txt file is not a data file, every other file is read."""
    result = load_examples([data_dir / "bad"], skip_invalid=True)
    assert len(result.files) == len(BAD) - 1 == 39
    assert str(bad(data_dir, "unsupported_extension.txt")) not in result.files
    assert len(result.examples) == sum(len(kept) for kept, _ in PARTIAL.values()) == 13
    assert len(result.skipped) == 43  # 33 files with one problem each, 10 records in the 6 PARTIAL files
    assert sum(item.whole_file for item in result.skipped) == sum(BAD[n][4] for n in BAD if n.endswith(
        (".json", ".jsonl", ".ndjson", ".csv"))) == 17
    assert summarize_skipped(result.skipped)[0] == "--skip-invalid: skipped 43 item(s) in 39 file(s):"


# ------------------------------------------------------------------------------------------ inputs built at test time


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.json"
    for kw in ({}, {"skip_invalid": True}):
        assert str(error_of([missing], **kw)) == (
            f"{missing}: does not exist. Fix: check the path passed to --data / --val-data.")


def test_symlink_loops(tmp_path):
    (tmp_path / "loop.json").symlink_to("loop.json")  # the path itself loops: reported as missing
    assert str(error_of([tmp_path / "loop.json"])) == (
        f"{tmp_path / 'loop.json'}: does not exist. Fix: check the path passed to --data / --val-data.")

    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "qa.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    (folder / "sub" / "up").symlink_to("..")  # a folder cycle: each folder is visited once
    assert load_examples(folder).files == [str(folder / "sub" / "qa.json")]

    (folder / "self.json").symlink_to("self.json")  # a looping file inside a folder
    assert str(error_of(folder)) == (
        f"{folder / 'self.json'}: cannot be read (Too many levels of symbolic links). Fix: check the path.")
    result = load_examples(folder, skip_invalid=True)
    assert len(result.examples) == 1
    assert [str(s) for s in result.skipped] == [
        f"skipped file: {folder / 'self.json'}: cannot be read (Too many levels of symbolic links). "
        "Fix: check the path."]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read a chmod 000 file")
def test_unreadable_file_chmod(tmp_path):
    path = tmp_path / "secret.json"
    path.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    path.chmod(0)
    try:
        assert str(error_of(path)) == (f"{path}: cannot be read (permission denied). "
                                       "Fix: fix the file's permissions or leave it out.")
    finally:
        path.chmod(0o644)


def test_unreadable_file_message(tmp_path, monkeypatch):
    """The same message, forced (tests run as root, where chmod 000 does not stop reads)."""
    path = tmp_path / "secret.json"
    path.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == "secret.json":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert str(error_of(path)) == (f"{path}: cannot be read (permission denied). "
                                   "Fix: fix the file's permissions or leave it out.")
    other = tmp_path / "ok.json"
    other.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    result = load_examples([path, other], skip_invalid=True)
    assert len(result.examples) == 1 and result.skipped[0].whole_file


def test_very_deep_nesting(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    path = tmp_path / "deep.json"
    path.write_text(deep)
    assert str(error_of(path)) == (f"{path}: is nested too deeply to parse. "
                                   "Fix: flatten the structure to the documented format.")
    lines = tmp_path / "deep.jsonl"
    lines.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n" + deep + "\n")
    assert str(error_of(lines)) == f"{lines}, line 2: is nested too deeply to parse. Fix: write one flat record per line."
    result = load_examples(lines, skip_invalid=True)
    assert len(result.examples) == 1 and len(result.skipped) == 1 and not result.skipped[0].whole_file


def test_huge_record_loads_whole(tmp_path):
    """A 2 MB answer is not cut by the loader (truncation is by tokens, later); JSON and CSV alike."""
    answer = "Le café est chaud. " * 110_000  # 2,090,000 characters, 2.2 MB in UTF-8
    assert len(answer.encode()) > 2_000_000
    as_json = tmp_path / "huge.json"
    as_json.write_text(json.dumps([{"question": "Long?", "answer": answer}], ensure_ascii=False), encoding="utf-8")
    as_csv = tmp_path / "huge.csv"
    as_csv.write_text(f'question,answer\nLong?,"{answer}"\n', encoding="utf-8")
    result = load_examples([as_json, as_csv])
    assert [e.answer for e in result.examples] == [answer, answer]


def test_jsonl_splits_on_newline_only(tmp_path):
    """U+2028, U+2029 and U+0085 are legal inside JSON strings and must not end a JSON Lines record."""
    path = tmp_path / "seps.jsonl"
    records = [{"question": "line\u2028separator?", "answer": "para\u2029graph"}, {"question": "next\x85line?",
                                                                                 "answer": "ok"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    result = load_examples(path)
    assert [e.messages for e in result.examples] == [qa(r["question"], r["answer"]) for r in records]
    assert [e.source for e in result.examples] == [f"{path}, line 1", f"{path}, line 2"]


def test_unsupported_extension_and_empty_folder(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("question,answer\nq,a\n")
    assert error_of(txt).problem == "has an unsupported extension '.txt'"
    assert str(error_of(tmp_path)) == (f"{tmp_path}: holds no supported data files. "
                                       f"Fix: put .json, .jsonl, .csv, .parquet or .arrow files there; supported formats are {SUPPORTED}.")


def test_empty_path_list():
    assert error_of([]).problem == "no usable examples were found"


# ------------------------------------------------------------------------------------------ good files


def test_json_list(data_dir):
    p = data_dir / "good" / "qa_list.json"
    assert summary(load_examples(p).examples) == [
        (qa("What is TCP?", "A reliable transport protocol."), "networking", f"{p}, record index 0", {}),
        (qa("What does a compiler do?", "It translates source code."), "programming", f"{p}, record index 1",
         {"id": 7, "tags": ["basics", "tools"]}),
        (qa("What is RAM?", "Working memory."), "general", f"{p}, record index 2", {}),
    ]


def test_qa_pairs_wrapper(data_dir):
    p = data_dir / "good" / "qa_pairs.json"
    assert summary(load_examples(p).examples) == [
        (qa("What is DNS?", "The name system of the internet."), "networking", f"{p}, record index 0", {}),
        (qa("What is a thread?", "A unit of execution."), "general", f"{p}, record index 1", {"difficulty": "easy"}),
    ]


def test_jsonl_with_crlf_and_blank_line(data_dir):
    p = data_dir / "good" / "qa.jsonl"
    assert b"\r\n" in p.read_bytes()
    assert summary(load_examples(p).examples) == [
        (qa("What is UDP?", "A datagram protocol."), "networking", f"{p}, line 1", {}),
        (qa("What is a cache?", "Fast memory for reused data."), "general", f"{p}, line 3", {"id": "c-2"}),
        (qa("What is a kernel?", "The core of an operating system."), "programming", f"{p}, line 4", {}),
    ]


def test_ndjson(data_dir):
    p = data_dir / "good" / "qa.ndjson"
    assert summary(load_examples(p).examples) == [
        (qa("What is a socket?", "An endpoint for network traffic."), "general", f"{p}, line 1", {}),
        (qa("What is a disk?", "Persistent storage."), "hardware", f"{p}, line 2", {}),
    ]


def test_conversations_json(data_dir):
    p = data_dir / "good" / "conversations.json"
    examples = load_examples(p).examples
    assert summary(examples) == [
        ([{"role": "system", "content": "You are a networking tutor."},
          {"role": "user", "content": "What is a switch?"},
          {"role": "assistant", "content": "A device that connects hosts in a LAN."}],
         "networking", f"{p}, record index 0", {"id": "conv-1"}),
        ([{"role": "user", "content": "What is Python?"}, {"role": "assistant", "content": "A programming language."},
          {"role": "user", "content": "Is it compiled?"},
          {"role": "assistant", "content": "To bytecode, then interpreted."}],
         "general", f"{p}, record index 1", {}),
        (qa("What is a router?", "A device that forwards packets."), "general", f"{p}, record index 2", {}),
    ]
    # question = first user turn, answer = last assistant turn
    assert (examples[1].question, examples[1].answer) == ("What is Python?", "To bytecode, then interpreted.")


def test_conversations_jsonl_and_single_conversation(data_dir):
    p = data_dir / "good" / "conversations.jsonl"
    assert summary(load_examples(p).examples) == [
        (qa("What is a router?", "A device that forwards packets."), "networking", f"{p}, line 1", {}),
        ([{"role": "system", "content": ""}, *qa("What is a GPU?", "A parallel processor.")], "general",
         f"{p}, line 2", {}),  # an empty system message is allowed
    ]
    p = data_dir / "good" / "single_conversation.json"
    assert summary(load_examples(p).examples) == [
        (qa("What is a router?", "A device that forwards packets."), "networking", f"{p}, record index 0",
         {"lang": "en"})]


def test_csv_with_domain_quotes_and_extra_column(data_dir):
    p = data_dir / "good" / "qa.csv"
    assert summary(load_examples(p).examples) == [
        (qa("What is HTTP?", "A web protocol."), "networking", f"{p}, line 2", {"source": "rfc"}),
        (qa("What is a list, in Python?", "An ordered,\nmutable sequence."), "programming", f"{p}, line 3",
         {"source": "docs"}),
        (qa("What is a CPU?", "The main processor."), "general", f"{p}, line 5", {"source": "book"}),  # empty domain
    ]


def test_utf8_bom_files_load(data_dir):
    p = data_dir / "good" / "bom.json"
    assert p.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert summary(load_examples(p).examples) == [
        (qa("Qu'est-ce qu'un café ?", "Une boisson."), "général", f"{p}, record index 0", {})]
    p = data_dir / "good" / "bom.csv"  # the BOM must not become part of the "question" header
    assert summary(load_examples(p).examples) == [
        (qa("What is NAT?", "Address translation."), "general", f"{p}, line 2", {})]


GOOD_ORDER = ["bom.csv", "bom.json", "conversations.json", "conversations.jsonl", "nested/deeper/more.jsonl", "qa.csv",
              "qa.jsonl", "qa.ndjson", "qa_list.json", "qa_pairs.json", "single_conversation.json"]


def test_folder_loads_recursively_in_sorted_order(data_dir):
    good = data_dir / "good"
    result = load_examples(good)
    assert result.files == [str(good / name) for name in GOOD_ORDER]
    assert len(result.examples) == 1 + 1 + 3 + 2 + 1 + 3 + 3 + 2 + 3 + 2 + 1 == 22
    assert result.skipped == []
    assert result.examples[7].source == f"{good / 'nested' / 'deeper' / 'more.jsonl'}, line 1"


def test_several_paths_keep_the_given_order(data_dir):
    good = data_dir / "good"
    result = load_examples([good / "qa_pairs.json", str(good / "nested"), good / "bom.csv"])
    assert result.files == [str(good / "qa_pairs.json"), str(good / "nested" / "deeper" / "more.jsonl"),
                            str(good / "bom.csv")]
    assert [e.question for e in result.examples] == ["What is DNS?", "What is a thread?", "What is a packet?",
                                                     "What is NAT?"]


def test_hidden_files_and_other_extensions_are_ignored_in_folders(tmp_path):
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "broken.json").write_text("{")
    (tmp_path / ".hidden.jsonl").write_text("{")
    (tmp_path / "README.md").write_text("# data")
    (tmp_path / "b.JSON").write_text(json.dumps([{"question": "b", "answer": "B"}]))  # suffixes are case-insensitive
    (tmp_path / "a.csv").write_text("question,answer\na,A\n")
    result = load_examples(tmp_path)
    assert result.files == [str(tmp_path / "a.csv"), str(tmp_path / "b.JSON")]
    assert [e.question for e in result.examples] == ["a", "b"]


def test_read_file_matches_load_examples(data_dir):
    p = data_dir / "good" / "qa.ndjson"
    assert summary(read_file(p).examples) == summary(load_examples(p).examples)
    header_only = bad(data_dir, "csv_header_only.csv")
    result = read_file(header_only, skip_invalid=True)
    assert result.examples == [] and result.files == [str(header_only)]
    assert [str(s) for s in result.skipped] == [
        f"skipped file: {header_only}: holds no records. Fix: add records or leave the file out."]


# ------------------------------------------------------------------------------------------ saved datasets


def test_saved_dataset_folder(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({
        "question": ["What is TCP?", "What is UDP?"],
        "answer": ["A transport protocol.", "A datagram protocol."],
        "domain": ["networking", None],
        "id": [1, 2],
    }).save_to_disk(str(folder))
    result = load_examples(folder)
    assert result.files == [str(folder)]
    assert summary(result.examples) == [
        (qa("What is TCP?", "A transport protocol."), "networking", f"{folder}, row 0", {"id": 1}),
        (qa("What is UDP?", "A datagram protocol."), "general", f"{folder}, row 1", {"id": 2}),
    ]
    # inside a folder, next to a plain file, in sorted order
    (tmp_path / "z.jsonl").write_text(json.dumps({"question": "z", "answer": "Z"}) + "\n")
    assert load_examples(tmp_path).files == [str(folder), str(tmp_path / "z.jsonl")]


def test_saved_dataset_with_messages_and_bad_rows(tmp_path):
    import datasets

    folder = tmp_path / "chats"
    datasets.Dataset.from_dict({"messages": [qa("Hi?", "Hello."), [{"role": "user", "content": "Only a question"}]]}
                               ).save_to_disk(str(folder))
    assert str(error_of(folder)) == (f'{folder}, row 1, field "messages": has no assistant turn, so there is nothing '
                                     'to learn. Fix: add at least one {"role": "assistant", "content": ...} turn.')
    result = load_examples(folder, skip_invalid=True)
    assert [e.messages for e in result.examples] == [qa("Hi?", "Hello.")]
    assert len(result.skipped) == 1


def test_dataset_dict_folder_is_refused(tmp_path):
    import datasets

    split = datasets.Dataset.from_dict({"question": ["q"], "answer": ["a"]})
    folder = tmp_path / "outer" / "dd"
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(folder))
    message = (f"{folder}: is a DatasetDict with splits ['test', 'train']. "
               f"Fix: pass one split's folder, e.g. {folder / 'test'}.")
    assert str(error_of(folder)) == message
    # found inside a folder, it gets the same error (its splits are not silently merged)
    assert str(error_of(tmp_path / "outer")) == message
    # and a split folder is a plain saved dataset
    assert [e.question for e in load_examples(folder / "train").examples] == ["q"]


def test_damaged_saved_dataset(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "state.json").write_text("{}")
    (folder / "dataset_info.json").write_text("{}")
    err = error_of(folder)
    assert err.file == str(folder) and err.where is None and err.field is None
    assert err.problem.startswith("cannot be loaded with datasets.load_from_disk (")
    assert err.fix == "re-save it with Dataset.save_to_disk"


# ------------------------------------------------------------------------------------------ duplicates and leakage


def test_normalize_question():
    assert normalize_question("  What is TCP?? ") == "what is tcp"
    assert normalize_question("What's\tthe  OSI-model!") == "what s the osi model"


def test_duplicates_in_good_folder(data_dir):
    good = data_dir / "good"
    report = find_duplicates(load_examples(good).examples)
    sources = [f"{good / 'conversations.json'}, record index 2", f"{good / 'conversations.jsonl'}, line 1",
               f"{good / 'single_conversation.json'}, record index 0"]
    assert report.kind == "duplicate" and report.count == 1
    assert report.groups == {"what is a router": sources}
    assert report.lines() == ["1 question(s) appear more than once in the training data:",
                              f"  'what is a router': {', '.join(sources)}"]


def test_duplicates_limit_and_none():
    examples = [Example.from_qa(f"Question {i // 2}?", "a", source=f"f.json, record index {i}") for i in range(14)]
    report = find_duplicates(examples)
    assert report.count == 7
    assert report.lines(limit=2) == [
        "7 question(s) appear more than once in the training data:",
        "  'question 0': f.json, record index 0, f.json, record index 1",
        "  'question 1': f.json, record index 2, f.json, record index 3",
        "  ... and 5 more",
    ]
    assert len(report.lines()) == 1 + 5 + 1
    assert find_duplicates(examples[::2]).lines() == [] and find_duplicates([]).count == 0


def test_leakage(data_dir):
    train = load_examples(data_dir / "good" / "qa_list.json").examples + [
        Example.from_qa("what is tcp", "again", source="extra.json, record index 0")]
    val = [Example.from_qa("WHAT IS TCP ?", "x", source="val.jsonl, line 1"),
           Example.from_qa("What is RAM", "x", source="val.jsonl, line 2"),
           Example.from_qa("What is a GPU?", "x", source="val.jsonl, line 3"),
           Example.from_qa("what is ram?", "x", source="val.jsonl, line 4")]
    report = find_leakage(train, val)
    p = data_dir / "good" / "qa_list.json"
    assert report.kind == "leakage" and report.count == 2
    assert report.groups == {
        "what is tcp": ["val.jsonl, line 1", f"{p}, record index 0", "extra.json, record index 0"],
        "what is ram": ["val.jsonl, line 2", f"{p}, record index 2"],  # the first validation source only
    }
    assert report.lines() == [
        "2 validation question(s) also appear in the training data (leakage):",
        f"  'what is tcp': val.jsonl, line 1, {p}, record index 0, extra.json, record index 0",
        f"  'what is ram': val.jsonl, line 2, {p}, record index 2",
    ]
    assert find_leakage(train, val[2:3]).lines() == []
    assert OverlapReport("leakage").lines() == []


# ------------------------------------------------------------------------------------------ property test

_text = st.text(alphabet=string.ascii_letters + string.digits + " ?.,'é\n\t\u2028", max_size=12)
_junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                  st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                  _text)
_valid = st.fixed_dictionaries(
    {"question": _text.filter(str.strip), "answer": _text.filter(str.strip)},
    optional={"domain": st.sampled_from(["networking", " programming ", "hardware"]), "id": st.integers()})
_maybe_invalid = st.fixed_dictionaries({"question": _junk, "answer": _junk},
                                       optional={"domain": st.one_of(_junk, st.just("ok")), "extra": _junk})
_non_dict = st.one_of(st.none(), st.booleans(), st.integers(), _text, st.lists(st.integers(), min_size=1, max_size=3))
_record = st.one_of(_valid, _maybe_invalid, _non_dict)


def _is_valid(record) -> bool:
    def text(value):
        return isinstance(value, str) and bool(value.strip())

    if not isinstance(record, dict):
        return False
    domain = record.get("domain")
    return text(record.get("question")) and text(record.get("answer")) and (domain is None or text(domain))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_record, min_size=1, max_size=12))
def test_property_jsonl_loads_exactly_the_valid_records(records):
    valid = [r for r in records if _is_valid(r)]
    first_bad = next((i for i, r in enumerate(records, start=1) if not _is_valid(r)), None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

        if first_bad is None:
            result = load_examples(path)
            assert [e.messages for e in result.examples] == [qa(r["question"], r["answer"]) for r in valid]
            # a null domain is "general", as an absent one
            assert [e.domain for e in result.examples] == [(r.get("domain") or "general").strip() for r in valid]
        else:
            with pytest.raises(DataError) as info:
                load_examples(path)
            assert info.value.file == str(path)
            assert info.value.where == f"line {first_bad}"

        if not valid:
            with pytest.raises(DataError) as info:
                load_examples(path, skip_invalid=True)
            assert info.value.problem.startswith("no usable examples were found\n")
        else:
            result = load_examples(path, skip_invalid=True)
            assert len(result.examples) == len(valid)
            assert [e.question for e in result.examples] == [r["question"] for r in valid]
            assert len(result.skipped) == len(records) - len(valid)
            assert all(isinstance(s, SkippedItem) and not s.whole_file for s in result.skipped)
