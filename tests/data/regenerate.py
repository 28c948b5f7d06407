"""Rewrite the committed data files under tests/data/good and tests/data/bad.

Run ``python tests/data/regenerate.py`` after changing a file here. Some files hold bytes that
editors like to "fix" (latin-1, NUL, a BOM), so they are written from this script.
Inputs that cannot be committed (a 2 MB answer, 100000 nested lists, an unreadable file,
a symlink loop, a missing path) are built at test time in ``tmp_path`` instead.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
BOM = b"\xef\xbb\xbf"


def dumps(data) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


def line(data) -> str:
    return json.dumps(data, ensure_ascii=False) + "\n"


QA = {"question": "What is TCP?", "answer": "A reliable transport protocol."}
CHAT = [{"role": "user", "content": "What is a router?"}, {"role": "assistant", "content": "A device that forwards packets."}]

GOOD: dict[str, str | bytes] = {
    "qa_list.json": dumps([
        {"question": "What is TCP?", "answer": "A reliable transport protocol.", "domain": "networking"},
        {"question": "What does a compiler do?", "answer": "It translates source code.", "domain": "programming",
         "id": 7, "tags": ["basics", "tools"]},
        {"question": "What is RAM?", "answer": "Working memory."},
    ]),
    "qa_pairs.json": dumps({"qa_pairs": [
        {"question": "What is DNS?", "answer": "The name system of the internet.", "domain": "networking"},
        {"question": "What is a thread?", "answer": "A unit of execution.", "difficulty": "easy"},
    ]}),
    # CRLF line ends and a blank line: both are accepted
    "qa.jsonl": (line({"question": "What is UDP?", "answer": "A datagram protocol.", "domain": "networking"})
                 + "\n" + line({"question": "What is a cache?", "answer": "Fast memory for reused data.", "id": "c-2"})
                 + line({"question": "What is a kernel?", "answer": "The core of an operating system.",
                         "domain": "programming"})).replace("\n", "\r\n"),
    "qa.ndjson": (line({"question": "What is a socket?", "answer": "An endpoint for network traffic."})
                  + line({"question": "What is a disk?", "answer": "Persistent storage.", "domain": "hardware"})),
    "conversations.json": dumps([
        {"messages": [{"role": "system", "content": "You are a networking tutor."},
                      {"role": "user", "content": "What is a switch?"},
                      {"role": "assistant", "content": "A device that connects hosts in a LAN."}],
         "domain": "networking", "id": "conv-1"},
        {"conversation": [{"role": "user", "content": "What is Python?"},
                          {"role": "assistant", "content": "A programming language."},
                          {"role": "user", "content": "Is it compiled?"},
                          {"role": "assistant", "content": "To bytecode, then interpreted."}]},
        CHAT,
    ]),
    "conversations.jsonl": (line({"messages": CHAT, "domain": "networking"})
                            + line([{"role": "system", "content": ""},
                                    {"role": "user", "content": "What is a GPU?"},
                                    {"role": "assistant", "content": "A parallel processor."}])),
    "single_conversation.json": dumps({"messages": CHAT, "domain": "networking", "lang": "en"}),
    "qa.csv": ('question,answer,domain,source\n'
               'What is HTTP?,A web protocol.,networking,rfc\n'
               '"What is a list, in Python?","An ordered,\nmutable sequence.",programming,docs\n'
               'What is a CPU?,The main processor.,,book\n'),
    "bom.json": BOM + dumps([{"question": "Qu'est-ce qu'un café ?", "answer": "Une boisson.", "domain": "général"}]).encode(),
    "bom.csv": BOM + "question,answer\nWhat is NAT?,Address translation.\n".encode(),
    "nested/deeper/more.jsonl": line({"question": "What is a packet?", "answer": "A unit of network data."}),
}

BAD: dict[str, str | bytes] = {
    # ----- JSON syntax and layout
    "json_truncated.json": '[{"question": "What is TCP?", "answer": "A transport protocol."',
    "json_empty.json": "",
    "json_whitespace.json": "  \n\t\n   \n",
    "json_top_level_string.json": '"What is TCP?"\n',
    "json_top_level_number.json": "42\n",
    "json_unsupported_top_dict.json": '{"foo": 1}\n',
    "json_empty_list.json": "[]\n",
    "json_qa_pairs_not_list.json": dumps({"qa_pairs": QA}),
    "json_qa_pairs_empty.json": dumps({"qa_pairs": []}),
    "json_deeply_nested.json": "[" * 5000 + "]" * 5000,
    # ----- JSON records
    "json_unknown_keys.json": dumps([{"foo": 1}]),
    "json_question_number.json": dumps([{"question": 42, "answer": "Forty-two."}]),
    "json_answer_list.json": dumps([{"question": "Name two protocols.", "answer": ["TCP", "UDP"]}]),
    "json_answer_null.json": dumps([QA, {"question": "What is IP?", "answer": None}]),
    "json_question_missing.json": dumps([{"answer": "A transport protocol."}]),
    "json_answer_empty.json": dumps([{"question": "What is TCP?", "answer": "   "}]),
    "json_record_not_object.json": dumps([QA, "What is UDP?", QA]),
    "json_domain_number.json": dumps([{**QA, "domain": 7}]),
    "json_domain_empty.json": dumps([{**QA, "domain": " "}]),
    # ----- conversations
    "conv_unknown_role.json": dumps([{"messages": [{"role": "user", "content": "Hi"},
                                                   {"role": "bot", "content": "Hello"}]}]),
    "conv_no_assistant.json": dumps([{"messages": [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": "What is TCP?"}]}]),
    "conv_messages_not_list.json": dumps([{"messages": "What is TCP?"}]),
    "conv_messages_empty.json": dumps({"messages": []}),
    "conv_turn_not_object.json": dumps([["What is TCP?", {"role": "assistant", "content": "A protocol."}]]),
    "conv_content_null.json": dumps([{"conversation": [{"role": "user", "content": "What is TCP?"},
                                                       {"role": "assistant", "content": None}]}]),
    "conv_role_missing.json": dumps([{"messages": [{"content": "What is TCP?"},
                                                   {"role": "assistant", "content": "A protocol."}]}]),
    # ----- encodings and binary data
    "json_latin1.json": '[{"question": "Qu\'est-ce qu\'un café ?", "answer": "Une boisson."}]\n'.encode("latin-1"),
    "json_bom_latin1.json": BOM + '[{"question": "café?", "answer": "x"}]\n'.encode("latin-1"),
    "json_nul_byte.json": b'[{"question": "What is TCP?",\n "answer": "A \x00protocol."}]\n',
    "jsonl_mixed_encoding.jsonl": (line({"question": "Qu'est-ce qu'un café ?", "answer": "Une boisson."}).encode()
                                   + line({"question": "Et un thé ?", "answer": "Une autre boisson."}).encode("latin-1")),
    # ----- JSON Lines
    "jsonl_bad_line_middle.jsonl": (line({"question": "Q1?", "answer": "A1."}) + line({"question": "Q2?", "answer": "A2."})
                                    + '{"question": "Q3?", "answer": "A3."\n'
                                    + line({"question": "Q4?", "answer": "A4."}) + line({"question": "Q5?", "answer": "A5."})),
    "jsonl_mixed_errors.jsonl": (line({"question": "Q1?", "answer": "A1."})
                                 + line({"question": 42, "answer": "A2."})
                                 + "\n"
                                 + "42\n"
                                 + line({"question": "Q5?", "answer": "A5.", "domain": "networking"})
                                 + line({"messages": [{"role": "user", "content": "Q6?"}, {"role": "robot", "content": "A6."}]})
                                 + '{"question": "Q7?" "answer": "A7."}\n'
                                 + line({"question": "Q8?", "answer": None})
                                 + line([{"role": "user", "content": "Q9?"}, {"role": "assistant", "content": "A9."}])),
    "ndjson_empty_question.ndjson": line({"question": "", "answer": "A1."}),
    # ----- CSV
    "csv_ragged.csv": "question,answer\nWhat is TCP?,A protocol.\nWhat is UDP?,A datagram,protocol\nWhat is IP?,An addressing protocol.\n",
    "csv_missing_answer_column.csv": "question,reply\nWhat is TCP?,A protocol.\n",
    "csv_nul_byte.csv": b"question,answer\nWhat is TCP?,A protocol.\nWhat is UDP?,A data\x00gram protocol.\n",
    "csv_header_only.csv": "question,answer\n",
    "csv_empty_answer.csv": "question,answer\nWhat is TCP?,\n",
    "csv_unterminated_quote.csv": 'question,answer\nWhat is TCP?,A protocol.\n"What is UDP?,A datagram protocol.\n',
    # ----- unsupported
    "unsupported_extension.txt": "What is TCP? A transport protocol.\n",
}


def write(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_bytes(content.encode("utf-8"))
        else:
            path.write_bytes(content)


if __name__ == "__main__":
    write(HERE / "good", GOOD)
    write(HERE / "bad", BAD)
    print(f"wrote {len(GOOD)} good and {len(BAD)} bad files")
