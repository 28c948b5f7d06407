"""Any data layout without rewriting files, and mixing several sources (issue 16, part 3).

Alpaca and ShareGPT are read without a map; other field and role names through ``--field-map`` / ``--role-map``;
Parquet and Arrow files through ``datasets``; ``PATH:WEIGHT`` sources mixed with a seed. The messages asserted
here are the ones docs/dataset_guide.md shows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from theta_ai.config import ConfigError, resolve_config
from theta_ai.config.resolve import split_weight
from theta_ai.config.samples import sample_path
from theta_ai.data import DataError, load_examples, parse_maps, parse_source
from theta_ai.data.mapping import DataReport, Source, mix, reading_notes

ALPACA = "Alpaca (instruction/input/output)"
SHAREGPT = "ShareGPT conversations (from/value)"


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def write_lines(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def qa(question, answer):
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def error_of(paths, **kw) -> str:
    with pytest.raises(DataError) as info:
        load_examples(paths, **kw)
    return str(info.value)


def alpaca_records(n: int) -> list[dict]:
    return [{"instruction": f"What does tool {i} do?", "input": "", "output": f"Tool {i} checks the data."}
            for i in range(n)]


def sharegpt_records(n: int) -> list[dict]:
    return [{"id": f"c{i}", "conversations": [{"from": "system", "value": "Be brief."},
                                              {"from": "human", "value": f"What is box {i}?"},
                                              {"from": "gpt", "value": f"Box {i} holds parts."}]} for i in range(n)]


# ------------------------------------------------------------------------------------------ Alpaca


def test_alpaca_with_and_without_input(tmp_path):
    path = write(tmp_path / "alpaca.json", [
        {"instruction": "Translate to French.", "input": "cheese", "output": "fromage"},
        {"instruction": "What is TCP?", "input": "", "output": "A transport protocol."},
        {"instruction": "What is UDP?", "output": "A datagram protocol.", "category": "networking"},
        {"instruction": "Name a port.", "input": "  \n", "output": "80"},
    ])
    result = load_examples(path)
    assert [e.messages for e in result.examples] == [
        qa("Translate to French.\n\ncheese", "fromage"),  # instruction, a blank line, the input
        qa("What is TCP?", "A transport protocol."),
        qa("What is UDP?", "A datagram protocol."),
        qa("Name a port.", "80"),  # white space only: no input
    ]
    assert result.examples[2].meta == {"category": "networking"} and result.examples[2].domain == "general"
    assert result.layouts == {str(path): {ALPACA: 4}}
    assert result.reports[0].describe() == f"{path}: 4 records, layout {ALPACA}"


def test_alpaca_csv_and_located_errors(tmp_path):
    path = tmp_path / "alpaca.csv"
    path.write_text("instruction,input,output\nSay hi,,hi\nTranslate,cheese,fromage\n", encoding="utf-8")
    assert [e.question for e in load_examples(path).examples] == ["Say hi", "Translate\n\ncheese"]
    path.write_text("instruction,input\nSay hi,\n", encoding="utf-8")
    assert error_of(path) == (f"{path}, line 1: CSV header ['instruction', 'input'] lacks column(s) ['output']. "
                              "Fix: add a header row with instruction,output (and optionally domain).")
    bad = write_lines(tmp_path / "bad.jsonl", [
        {"instruction": "Say hi", "input": "", "output": "hi"},
        {"instruction": "Add", "input": 2, "output": "3"},
        {"instruction": "", "output": "x"},
        {"instruction": "Q", "input": "", "output": None},
        {"input": "2+2", "output": "4"},
    ])
    result = load_examples(bad, skip_invalid=True)
    assert [e.question for e in result.examples] == ["Say hi"]
    assert [str(s.error) for s in result.skipped] == [
        f'{bad}, line 2, field "input": must be a string, got int. Fix: give the input as a string, or leave it empty.',
        f'{bad}, line 3, field "instruction": is empty. Fix: give the instruction as a non-empty string.',
        f'{bad}, line 4, field "output": is missing or null. Fix: give the output as a non-empty string.',
        f"{bad}, line 5: record has neither question/answer nor messages (keys: ['input', 'output']). "
        "Fix: read these fields with --field-map question=input,answer=output.",
    ]


# ------------------------------------------------------------------------------------------ ShareGPT


def test_sharegpt_from_value_human_gpt_system(tmp_path):
    path = write_lines(tmp_path / "sharegpt.jsonl", sharegpt_records(2) + [
        {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."},
                           {"from": "human", "value": "Bye?"}, {"from": "gpt", "value": "Bye."}],
         "domain": "chat"}])
    result = load_examples(path)
    assert result.examples[0].messages == [{"role": "system", "content": "Be brief."},
                                           *qa("What is box 0?", "Box 0 holds parts.")]
    assert result.examples[0].meta == {"id": "c0"} and result.examples[0].source == f"{path}, line 1"
    assert result.examples[2].messages == qa("Hi?", "Hello.") + qa("Bye?", "Bye.")
    assert result.examples[2].domain == "chat"
    assert result.layouts == {str(path): {SHAREGPT: 3}}


def test_sharegpt_located_errors_and_role_map(tmp_path):
    path = write(tmp_path / "sg.json", [{"conversations": [{"from": "human", "value": "Hi?"},
                                                           {"from": "bot", "value": "Hello."}]}])
    assert error_of(path) == (f"{path}, record index 0, field \"conversations[1].from\": unknown role 'bot'. "
                              "Fix: use one of system, user, assistant, human, gpt, or map it with "
                              "--role-map bot=assistant (or =user).")
    result = load_examples(path, maps=parse_maps(role_map="bot=assistant"))
    assert result.examples[0].messages == qa("Hi?", "Hello.")
    empty = write(tmp_path / "empty_value.json", [{"conversations": [{"from": "human", "value": "Hi?"},
                                                                     {"from": "gpt", "value": ""}]}])
    assert error_of(empty) == (f'{empty}, record index 0, field "conversations[1].value": is empty. '
                               "Fix: give every turn its text as a string.")


def test_role_map_for_role_content_turns(tmp_path):
    path = write(tmp_path / "gemma.json", [{"messages": [{"role": "human", "content": "Hi?"},
                                                         {"role": "model", "content": "Hello."}]}])
    assert error_of(path) == (f"{path}, record index 0, field \"messages[0].role\": unknown role 'human'. "
                              "Fix: use one of system, user, assistant.")
    maps = parse_maps(role_map="human=user,model=assistant")
    assert load_examples(path, maps=maps).examples[0].messages == qa("Hi?", "Hello.")


# ------------------------------------------------------------------------------------------ exchanges


def tutorial_dialogues(tmp_path) -> Path:
    """The layout of the 200 tutorial dialogues: turns under ``exchanges``, as role/content or as pairs."""
    return write(tmp_path / "tutorials.json", [
        {"title": "TCP basics", "level": 1, "exchanges": [
            {"role": "user", "content": "What is TCP?"}, {"role": "assistant", "content": "A reliable protocol."},
            {"role": "user", "content": "And UDP?"}, {"role": "assistant", "content": "A datagram protocol."}]},
        {"title": "Pairs", "exchanges": [{"user": "What is a port?", "assistant": "A number for a service."},
                                         {"user": "Which one is HTTP?", "assistant": "Port 80."}]},
    ])


def test_exchanges_need_a_map_and_say_which(tmp_path):
    path = tutorial_dialogues(tmp_path)
    assert error_of(path) == (f"{path}, record index 0: record has neither question/answer nor messages (keys: "
                              "['exchanges', 'level', 'title']). Fix: if 'exchanges' holds the conversation's turns, "
                              "read it with --field-map conversations=exchanges.")


def test_exchanges_with_a_map_role_content_and_pairs(tmp_path):
    path = tutorial_dialogues(tmp_path)
    result = load_examples(path, maps=parse_maps("conversations=exchanges"))
    assert [e.messages for e in result.examples] == [
        qa("What is TCP?", "A reliable protocol.") + qa("And UDP?", "A datagram protocol."),
        qa("What is a port?", "A number for a service.") + qa("Which one is HTTP?", "Port 80."),
    ]
    assert [e.meta for e in result.examples] == [{"title": "TCP basics", "level": 1}, {"title": "Pairs"}]
    assert result.layouts == {str(path): {"exchanges (role/content)": 1, "exchanges (user/assistant pairs)": 1}}
    assert result.reports[0].describe() == (f"{path}: 2 records, layouts exchanges (role/content) (1), "
                                            "exchanges (user/assistant pairs) (1)")


def test_exchanges_located_errors(tmp_path):
    maps = parse_maps("conversations=exchanges,role=speaker,content=text", "student=user,tutor=assistant")
    path = write_lines(tmp_path / "dialogues.jsonl", [
        {"exchanges": [{"speaker": "student", "text": "Hi?"}, {"speaker": "tutor", "text": "Hello."}]},
        {"exchanges": [{"speaker": "student", "text": "Hi?"}, {"speaker": "teacher", "text": "Hello."}]},
        {"exchanges": [{"student": "Hi?", "tutor": None}]},
        {"exchanges": [{"student": "Hi?", "tutor": 3}]},
        {"exchanges": [{"who": "student", "said": "Hi?"}]},
    ])
    result = load_examples(path, skip_invalid=True, maps=maps)
    assert [e.messages for e in result.examples] == [qa("Hi?", "Hello.")]
    assert [str(s.error) for s in result.skipped] == [
        f"{path}, line 2, field \"exchanges[1].speaker\": unknown role 'teacher'. "
        "Fix: use one of system, user, assistant, or map it with --role-map teacher=assistant (or =user).",
        f'{path}, line 3, field "exchanges": has no assistant turn, so there is nothing to learn. '
        'Fix: add at least one {"role": "assistant", "content": ...} turn.',  # a null in a pair is absent
        f'{path}, line 4, field "exchanges[0].tutor": must be a string, got int. '
        "Fix: give every turn its text as a string.",
        f"{path}, line 5, field \"exchanges[0]\": has neither role/content nor from/value (keys: ['said', 'who']). "
        "Fix: name its fields with --field-map role=NAME,content=NAME.",
    ]
    assert result.layouts == {str(path): {"exchanges (speaker/text)": 1}}


# ------------------------------------------------------------------------------------------ --field-map


def test_prompt_response_and_input_output_via_field_map(tmp_path):
    pr = write(tmp_path / "pr.json", [{"prompt": "What is DNS?", "response": "Names to addresses.", "id": 3}])
    io_ = write_lines(tmp_path / "io.jsonl", [{"input": "What is NAT?", "output": "Address translation."}])
    assert error_of(pr) == (f"{pr}, record index 0: record has neither question/answer nor messages (keys: ['id', "
                            "'prompt', 'response']). Fix: read these fields with --field-map question=prompt,"
                            "answer=response.")
    cfg = resolve_config({"field_map": "question=prompt,answer=response"})  # the flag's value, as parsed
    result = load_examples(pr, maps=parse_maps(cfg.field_map))
    assert result.examples[0].messages == qa("What is DNS?", "Names to addresses.")
    assert result.examples[0].meta == {"id": 3} and result.layouts == {str(pr): {"prompt/response": 1}}
    result = load_examples(io_, maps=parse_maps("question=input,answer=output"))
    assert result.examples[0].messages == qa("What is NAT?", "Address translation.")
    assert result.layouts == {str(io_): {"input/output": 1}}
    missing = write(tmp_path / "missing.json", [{"prompt": "What is DNS?", "reply": "x"}])
    assert error_of(missing, maps=parse_maps("question=prompt,answer=response")) == (
        f'{missing}, record index 0, field "response": is missing or null. '
        "Fix: give the response as a non-empty string.")


def test_dolly_style_map_with_input_and_domain(tmp_path):
    path = write(tmp_path / "dolly.json", [
        {"instruction": "Summarise.", "context": "TCP is reliable.", "response": "Reliable.", "category": "net"}])
    maps = parse_maps("question=instruction,input=context,answer=response,domain=category")
    example = load_examples(path, maps=maps).examples[0]
    assert (example.messages, example.domain, example.meta) == (qa("Summarise.\n\nTCP is reliable.", "Reliable."),
                                                                "net", {})


def test_maps_in_yaml_and_bad_maps(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("field_map: {question: prompt, answer: response}\nrole_map: {bot: assistant}\n")
    cfg = resolve_config(config_file=str(config))
    assert (cfg.field_map, cfg.role_map) == ("question=prompt,answer=response", "bot=assistant")
    with pytest.raises(ConfigError) as info:
        resolve_config({"field_map": "prompt"})
    assert str(info.value) == ("command line: field_map = 'prompt' is not a valid list of NAME=NAME pairs (write "
                               "NAME=NAME pairs separated by commas, e.g. question=prompt,answer=response)")
    for field_map, role_map, message in [
        ("prompt=question", None, "--field-map 'prompt=question': 'prompt' is not a theta field (the left side is one "
         "of question, input, answer, domain, conversations, role, content: THETA=FILE); write it the other way "
         "round: question=prompt"),
        ("question=text,answer=text", None, "--field-map 'question=text,answer=text': 'text' is mapped twice; map "
         "each name once"),
        (None, "user=human", "--role-map 'user=human': 'human' is not a theta role (the right side is one of system, "
         "user, assistant: FILE=THETA); write it the other way round: human=user"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_maps(field_map, role_map)
        assert str(info.value) == message


def test_a_map_that_matches_nothing_and_an_ambiguous_layout_say_so(tmp_path):
    tutorials = tutorial_dialogues(tmp_path)
    plain = write(tmp_path / "plain.json", [{"question": "What is IP?", "answer": "The internet protocol."}])
    both = write(tmp_path / "both.json", [{"messages": qa("Hi?", "Hello."), "question": "Hi?"}])
    maps = parse_maps("conversations=exchanges,input=context", "bot=assistant")
    result = load_examples([tutorials, plain, both], maps=maps)
    assert reading_notes(result.reports, maps) == [
        f"{both}: 1 record(s) match several layouts, read as messages (role/content) (also question/answer); "
        "a --field-map naming the fields of the one you mean chooses it",
        "--field-map: input=context matched nothing in any file; check the names",
        f"--field-map conversations=exchanges,input=context matched nothing in 2 of 3 file(s), read without it: "
        f"{plain}, {both}",
        "--role-map: bot=assistant matched nothing in any file; check the names",
    ]
    assert reading_notes(load_examples(plain).reports, parse_maps()) == []


# ------------------------------------------------------------------------------------------ Parquet and Arrow


def test_parquet_and_arrow_files_and_folders(tmp_path):
    import datasets
    import pyarrow as pa

    folder = tmp_path / "tables"
    (folder / "sub").mkdir(parents=True)
    datasets.Dataset.from_list(alpaca_records(2)).to_parquet(str(folder / "alpaca.parquet"))
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(sharegpt_records(2)).save_to_disk(str(saved))
    shutil.copy(next(saved.glob("*.arrow")), folder / "sub" / "chats.arrow")  # the stream format datasets writes
    table = pa.table({"question": ["What is RAM?"], "answer": ["Working memory."], "domain": ["hardware"]})
    with pa.ipc.new_file(str(folder / "sub" / "qa.arrow"), table.schema) as writer:  # the IPC file format
        writer.write_table(table)
    result = load_examples(folder)
    assert result.files == [str(folder / "alpaca.parquet"), str(folder / "sub" / "chats.arrow"),
                            str(folder / "sub" / "qa.arrow")]
    assert [e.source for e in result.examples] == [f"{folder / 'alpaca.parquet'}, row 0",
                                                   f"{folder / 'alpaca.parquet'}, row 1",
                                                   f"{folder / 'sub' / 'chats.arrow'}, row 0",
                                                   f"{folder / 'sub' / 'chats.arrow'}, row 1",
                                                   f"{folder / 'sub' / 'qa.arrow'}, row 0"]
    assert result.examples[0].messages == qa("What does tool 0 do?", "Tool 0 checks the data.")
    assert result.examples[3].messages[1:] == qa("What is box 1?", "Box 1 holds parts.")
    assert (result.examples[4].question, result.examples[4].domain) == ("What is RAM?", "hardware")
    assert result.layouts == {str(folder / "alpaca.parquet"): {ALPACA: 2}, str(folder / "sub" / "chats.arrow"):
                              {SHAREGPT: 2}, str(folder / "sub" / "qa.arrow"): {"question/answer": 1}}


def test_parquet_and_arrow_located_errors(tmp_path):
    import datasets

    rows = tmp_path / "rows.parquet"
    datasets.Dataset.from_dict({"prompt": ["a?", "b?", "c?"], "response": ["A.", None, "C."]}).to_parquet(str(rows))
    maps = parse_maps("question=prompt,answer=response")
    assert error_of(rows, maps=maps) == (f'{rows}, row 1, field "response": is missing or null. '
                                         "Fix: give the response as a non-empty string.")
    assert [e.question for e in load_examples(rows, maps=maps, skip_invalid=True).examples] == ["a?", "c?"]
    saved = tmp_path / "saved"
    datasets.Dataset.from_list([{"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Yo."}]},
                                {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "robot",
                                                                                      "value": "Yo."}]}]
                               ).save_to_disk(str(saved))
    arrow = tmp_path / "chats.arrow"
    shutil.copy(next(saved.glob("*.arrow")), arrow)
    assert error_of(arrow).startswith(f"{arrow}, row 1, field \"conversations[1].from\": unknown role 'robot'. ")
    broken = tmp_path / "broken.parquet"
    broken.write_text("not a table")
    assert error_of(broken).startswith(f"{broken}: cannot be read as Parquet (")
    assert error_of(broken).endswith("Fix: re-write it, e.g. with Dataset.to_parquet or DataFrame.to_parquet.")
    (tmp_path / "broken.arrow").write_text("not a table")
    assert error_of(tmp_path / "broken.arrow").startswith(f"{tmp_path / 'broken.arrow'}: cannot be read as Arrow (")


# ------------------------------------------------------------------------------------------ PATH:WEIGHT


def test_split_weight_only_takes_a_trailing_number(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert split_weight("a.json:2") == ("a.json", 2.0)
    assert split_weight("b.jsonl:0.5") == ("b.jsonl", 0.5)
    assert split_weight("a.json") == ("a.json", None)
    assert split_weight(r"C:\data\train.json") == (r"C:\data\train.json", None)  # a Windows drive is no weight
    assert split_weight(r"C:\data\train.json:3") == (r"C:\data\train.json", 3.0)
    assert split_weight("odd:name:1.json") == ("odd:name:1.json", None)
    (tmp_path / "notes:3").write_text("[]")  # an existing file whose name ends in :NUMBER stays a path
    assert split_weight("notes:3") == ("notes:3", None)
    assert split_weight("notes:3:2") == ("notes:3", 2.0)
    (tmp_path / "notes").write_text("[]")  # both exist: the shorter path with a weight wins
    assert split_weight("notes:3") == ("notes", 3.0)
    assert parse_source("a.json:1.5") == Source("a.json", 1.5)
    with pytest.raises(ConfigError, match=r"--data a.json:-1: the weight must be a number above 0"):
        parse_source("a.json:-1")


def test_weights_through_resolve_config_sample_and_yaml(tmp_path):
    cfg = resolve_config({"data": ["sample:theta_sample_conversations.jsonl:0.5", "sample:theta_sample_train.json"]})
    assert cfg.data == [f"{sample_path('theta_sample_conversations.jsonl')}:0.5",
                        str(sample_path("theta_sample_train.json"))]
    config = tmp_path / "mix.yaml"
    config.write_text("data:\n  - {path: a.json, weight: 2}\n  - path: sample:theta_sample_train.json\n"
                      "    fraction: 0.25\n  - c.jsonl:0.5\n  - {path: d.csv}\n")
    assert resolve_config(config_file=str(config)).data == [
        "a.json:2", f"{sample_path('theta_sample_train.json')}:0.25", "c.jsonl:0.5", "d.csv"]
    for values, message in [
        ({"data": ["a.json:0"]}, "--data (from command line): a.json:0: the weight must be a number above 0 (leave "
         "the source out instead)"),
        ({"val_data": ["v.json:2"]}, "--val-data (from command line): v.json:2: a weight mixes training data only; "
         "validation data is used whole"),
    ]:
        with pytest.raises(ConfigError) as info:
            resolve_config(values)
        assert str(info.value) == message
    config.write_text("data:\n  - {path: a.json, wieght: 2}\n")
    with pytest.raises(ConfigError, match=r"write \{path: FILE, weight: NUMBER\}.*; did you mean 'weight'\?"):
        resolve_config(config_file=str(config))
    config.write_text("data:\n  - {path: a.json, fraction: 2}\n")
    with pytest.raises(ConfigError, match="a fraction is above 0 and at most 1"):
        resolve_config(config_file=str(config))


# ------------------------------------------------------------------------------------------ mixing


def test_mix_counts_are_exact_and_seeded():
    ten = list(range(10))
    assert mix([ten], [0.5], seed=42) == ([1, 3, 6, 8, 9], [5])
    assert mix([ten], [0.5], seed=42) == mix([ten], [0.5], seed=42)  # same seed, same selection
    assert mix([ten], [0.5], seed=43) == ([0, 1, 2, 4, 9], [5])  # another seed, another one
    items, counts = mix([list("abcd"), ten], [2.5, 0.3], seed=42)
    assert counts == [10, 3]  # round(2.5 * 4) = 10: two whole copies and 2 sampled; round(0.3 * 10) = 3
    assert items == list("abcd") * 2 + ["a", "d"] + [1, 3, 6]
    assert mix([list("abcde")], [0.5], seed=0)[1] == [3]  # 2.5 rounds up
    assert mix([list("abc")], [None], seed=0) == (list("abc"), [3])  # no weight: every example once
    assert mix([list("abc")], [1], seed=0) == (list("abc"), [3])


def _run_data(values, tmp_path):
    from theta_ai.training.setup import load_run_data

    notes: list[str] = []
    report = DataReport()
    train, val = load_run_data(resolve_config({"model_name": "theta-tiny", **values}), notes, report)
    return train, val, notes, report


def test_load_run_data_mixes_after_the_validation_split(tmp_path):
    alpaca = write(tmp_path / "alpaca.json", alpaca_records(10))
    chats = write_lines(tmp_path / "chats.jsonl", sharegpt_records(6))
    val = write(tmp_path / "val.json", [{"question": "What is a bus?", "answer": "Wires."}])
    train, val_examples, notes, report = _run_data({"data": [f"{alpaca}:2", f"{chats}:0.5"],
                                                    "val_data": [str(val)]}, tmp_path)
    assert len(train) == 23 and len(val_examples) == 1 and notes == []  # copies are no duplicates
    assert [(s.path, s.weight, before, after) for s, before, after in report.sources] == [
        (str(alpaca), 2.0, 10, 20), (str(chats), 0.5, 6, 3)]
    assert report.banner_lines() == [
        f"layouts: {ALPACA} (1 file, 10 records); {SHAREGPT} (1 file, 6 records); question/answer (1 file, 1 record)",
        "training examples per source (mixed, seed 42):",
        f"  {alpaca}: weight 2, 10 -> 20",
        f"  {chats}: weight 0.5, 6 -> 3",
    ]
    assert report.file_lines() == [f"training data: {alpaca}: 10 records, layout {ALPACA}",
                                   f"training data: {chats}: 6 records, layout {SHAREGPT}",
                                   f"validation data: {val}: 1 record, layout question/answer"]
    # without --val-data the split is taken before mixing: the same validation set with or without weights
    _, plain_val, _, _ = _run_data({"data": [str(alpaca), str(chats)]}, tmp_path)
    mixed_train, mixed_val, _, report = _run_data({"data": [f"{alpaca}:3", f"{chats}:0.5"]}, tmp_path)
    assert [e.source for e in mixed_val] == [e.source for e in plain_val] and len(mixed_val) == 2
    assert not {e.source for e in mixed_val} & {e.source for e in mixed_train}  # no copy leaks into validation
    n_alpaca = sum(e.source.startswith(str(alpaca)) for e in mixed_train)
    assert [(before, after) for _, before, after in report.sources] == [(n_alpaca // 3, n_alpaca),
                                                                        (14 - n_alpaca // 3, len(mixed_train) - n_alpaca)]


def test_sample_source_with_a_weight_and_a_weight_that_rounds_to_none(tmp_path):
    val = write(tmp_path / "val.json", [{"question": "What is a bus?", "answer": "Wires."}])
    train, _, _, report = _run_data({"data": ["sample:theta_sample_conversations.jsonl:0.5"],
                                     "val_data": [str(val)]}, tmp_path)
    assert len(train) == 10 and [(b, a) for _, b, a in report.sources] == [(20, 10)]
    with pytest.raises(ConfigError) as info:
        _run_data({"data": [f"{val}:0.4"], "val_data": [str(val)]}, tmp_path)
    assert str(info.value) == (f"--data {val}:0.4: weight 0.4 of 1 training example(s) rounds to none; raise the "
                               "weight or leave the source out")


def test_field_map_reaches_load_run_data(tmp_path):
    tutorials = tutorial_dialogues(tmp_path)
    val = write(tmp_path / "val.json", [{"question": "What is a bus?", "answer": "Wires."}])
    train, _, notes, report = _run_data({"data": [str(tutorials)], "val_data": [str(val)],
                                         "field_map": "conversations=exchanges"}, tmp_path)
    assert [e.question for e in train] == ["What is TCP?", "What is a port?"]
    assert notes == [f"--field-map conversations=exchanges matched nothing in 1 of 2 file(s), read without it: {val}"]
    assert report.banner_lines() == ["layouts: exchanges (role/content) (1 file, 1 record); exchanges (user/assistant "
                                     "pairs) (1 file, 1 record); question/answer (1 file, 1 record)"]


# ------------------------------------------------------------------------------------------ the command line


def test_cli_dry_run_on_mixed_alpaca_and_sharegpt(tmp_path):
    write(tmp_path / "alpaca.json", alpaca_records(10))
    write_lines(tmp_path / "sharegpt.jsonl", sharegpt_records(6))
    write(tmp_path / "val.json", [{"question": "What is a bus?", "answer": "Wires carrying data."},
                                  {"question": "What is a fan?", "answer": "It cools parts."}])
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "theta_ai.cli.train", "--data", "alpaca.json:2",
                           "--data", "sharegpt.jsonl:0.5", "--val-data", "val.json", "--model-name", "theta-tiny",
                           "--dry-run", "--seed", "7"], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = proc.stdout.splitlines()
    assert "training data: alpaca.json: 10 records, layout Alpaca (instruction/input/output)" in stdout
    assert "training data: sharegpt.jsonl: 6 records, layout ShareGPT conversations (from/value)" in stdout
    assert "validation data: val.json: 2 records, layout question/answer" in stdout
    stderr = [line.removeprefix("[theta] ") for line in proc.stderr.splitlines()]
    i = stderr.index("training examples per source (mixed, seed 7):")
    assert stderr[i + 1:i + 3] == ["  alpaca.json: weight 2, 10 -> 20", "  sharegpt.jsonl: weight 0.5, 6 -> 3"]
    assert any(line.startswith("examples: 23 train, 2 validation;") for line in stderr)
    assert f"layouts: {ALPACA} (1 file, 10 records); {SHAREGPT} (1 file, 6 records); question/answer (1 file, 2 " \
           "records)" in stderr
