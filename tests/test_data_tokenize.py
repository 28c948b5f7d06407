"""Prompt templates and loss masking, token by token, with real (offline) tokenizers.

* ``qa_tokenizer``: theta-tiny's byte-level BPE (no chat template, pad == eos);
* ``chat_tokenizer``: a word-level tokenizer with a ChatML template and ``<|im_end|>`` as EOS.
  Its pre-tokenizer drops white space, so ``"<|im_start|>user\\nWhat is TCP?<|im_end|>\\n"`` is the
  tokens ``<|im_start|> user What is TCP ? <|im_end|>``; that keeps the expected ids readable.
"""

from __future__ import annotations

import json

import pytest

from theta_ai.data import (IGNORE_INDEX, Example, ExampleFormatter, FormatStats, PaddingCollator, TemplateError,
                           load_examples, resolve_template)

M = IGNORE_INDEX


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokens(tokenizer, *names: str) -> list[int]:
    found = tokenizer.convert_tokens_to_ids(list(names))
    assert tokenizer.unk_token_id not in found or "<unk>" in names, names
    return found


def conversation(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


SYSTEM_MULTI_TURN = conversation(("system", "Be brief."), ("user", "What is TCP?"),
                                 ("assistant", "A transport protocol."), ("user", "Thanks!"),
                                 ("assistant", "You are welcome."))


# ------------------------------------------------------------------------------------------ the qa template


def test_qa_template_masks_the_prompt_token_by_token(qa_tokenizer):
    tok = qa_tokenizer
    fmt = ExampleFormatter(tok, template="qa", max_seq_length=512)
    row = fmt.encode(Example.from_qa("What is TCP?", "A transport protocol."))
    prompt = ids(tok, "Question: What is TCP?\nAnswer:")
    answer = ids(tok, " A transport protocol.") + [tok.eos_token_id]
    assert tok.convert_ids_to_tokens(prompt) == ["Question", ":", "Ġ", "What", "Ġis", "ĠTCP", "?", "Ċ", "Answer", ":"]
    assert tok.convert_ids_to_tokens(answer) == ["Ġ", "A", "Ġtransport", "Ġprotocol", ".", "<|endoftext|>"]
    assert row == {"input_ids": prompt + answer, "labels": [M] * 10 + answer, "length": 16, "truncated": False}
    for position, (token_id, label) in enumerate(zip(row["input_ids"], row["labels"])):
        assert label == (M if position < len(prompt) else token_id), position
    assert tok.decode(row["input_ids"]) == "Question: What is TCP?\nAnswer: A transport protocol.<|endoftext|>"


def test_qa_template_pad_equal_to_eos_still_trains_eos(qa_tokenizer):
    """GPT-2 style: pad id == eos id. The final EOS is kept as a label; only padding positions are -100."""
    tok = qa_tokenizer
    assert tok.pad_token_id == tok.eos_token_id == 0
    fmt = ExampleFormatter(tok, template="qa")
    short = fmt.encode(Example.from_qa("What is TCP?", "A transport protocol."))
    long = fmt.encode(Example.from_qa("What is a router?", "A device that forwards packets."))
    assert short["labels"][-1] == long["labels"][-1] == 0
    batch = PaddingCollator(pad_token_id=tok.pad_token_id)([short, long])
    n, width = short["length"], long["length"]
    assert width > n
    assert batch["input_ids"][0].tolist() == short["input_ids"] + [0] * (width - n)
    assert batch["labels"][0].tolist() == short["labels"] + [M] * (width - n)  # real EOS 0 trained, pad 0 masked
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (width - n)
    assert batch["labels"][1].tolist() == long["labels"]


def test_qa_template_multi_turn_with_system(qa_tokenizer):
    tok = qa_tokenizer
    eos = tok.eos_token_id
    row = ExampleFormatter(tok, template="qa").encode(Example(SYSTEM_MULTI_TURN))
    segments = [(ids(tok, "Be brief.\n"), False), (ids(tok, "Question: What is TCP?\nAnswer:"), False),
                (ids(tok, " A transport protocol.") + [eos], True), (ids(tok, "Question: Thanks!\nAnswer:"), False),
                (ids(tok, " You are welcome.") + [eos], True)]
    assert row["input_ids"] == [i for seg, _ in segments for i in seg]
    assert row["labels"] == [i if train else M for seg, train in segments for i in seg]
    assert tok.decode(row["input_ids"]) == ("Be brief.\nQuestion: What is TCP?\nAnswer: A transport protocol."
                                            "<|endoftext|>Question: Thanks!\nAnswer: You are welcome.<|endoftext|>")
    # both answers are trained, with their EOS, and nothing else
    trained = [i for i, label in zip(row["input_ids"], row["labels"]) if label != M]
    assert tok.decode(trained) == " A transport protocol.<|endoftext|> You are welcome.<|endoftext|>"


def test_train_on_prompt_unmasks_everything(qa_tokenizer, chat_tokenizer):
    for tok, template in ((qa_tokenizer, "qa"), (chat_tokenizer, "chat")):
        masked = ExampleFormatter(tok, template=template).encode(Example(SYSTEM_MULTI_TURN))
        full = ExampleFormatter(tok, template=template, train_on_prompt=True).encode(Example(SYSTEM_MULTI_TURN))
        assert full["input_ids"] == masked["input_ids"]
        assert full["labels"] == full["input_ids"]
        assert M in masked["labels"]


# ------------------------------------------------------------------------------------------ the chat template


def test_chat_template_single_turn(chat_tokenizer):
    tok = chat_tokenizer
    fmt = ExampleFormatter(tok, template="auto")
    assert fmt.template == "chat"
    row = fmt.encode(Example.from_qa("What is TCP?", "A transport protocol."))
    prompt = tokens(tok, "<|im_start|>", "user", "What", "is", "TCP", "?", "<|im_end|>", "<|im_start|>", "assistant")
    answer = tokens(tok, "A", "transport", "protocol", ".", "<|im_end|>")
    assert row == {"input_ids": prompt + answer, "labels": [M] * 9 + answer, "length": 14, "truncated": False}
    assert answer[-1] == tok.eos_token_id != tok.pad_token_id


def test_chat_template_multi_turn_trains_every_assistant_turn(chat_tokenizer):
    tok = chat_tokenizer
    row = ExampleFormatter(tok, template="chat").encode(Example(SYSTEM_MULTI_TURN))
    segments = [
        (tokens(tok, "<|im_start|>", "system", "Be", "brief", ".", "<|im_end|>",
                "<|im_start|>", "user", "What", "is", "TCP", "?", "<|im_end|>", "<|im_start|>", "assistant"), False),
        (tokens(tok, "A", "transport", "protocol", ".", "<|im_end|>"), True),
        (tokens(tok, "<|im_start|>", "user", "Thanks", "!", "<|im_end|>", "<|im_start|>", "assistant"), False),
        (tokens(tok, "You", "are", "welcome", ".", "<|im_end|>"), True),
    ]
    assert row["input_ids"] == [i for seg, _ in segments for i in seg]
    assert row["labels"] == [i if train else M for seg, train in segments for i in seg]
    # the same id (<|im_end|>) is masked after user/system turns and trained after assistant turns: masking is by position
    im_end = tok.eos_token_id
    assert [label for i, label in zip(row["input_ids"], row["labels"]) if i == im_end] == [M, M, im_end, M, im_end]


def test_chat_template_that_does_not_grow_by_prefix(make_chat_tokenizer):
    reversed_template = ("{% for message in messages|reverse %}<|im_start|>{{ message['role'] }}\n"
                         "{{ message['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fmt = ExampleFormatter(make_chat_tokenizer(reversed_template), template="chat")
    with pytest.raises(TemplateError) as info:
        fmt.encode(Example(SYSTEM_MULTI_TURN))
    assert str(info.value) == ("the chat template does not render conversations as growing prefixes, so answer tokens "
                               "cannot be located; use --template qa")


def test_chat_template_errors_become_template_errors(chat_tokenizer, make_chat_tokenizer, qa_tokenizer):
    """A conversation the template cannot render is a TemplateError (a user error), not a traceback."""
    opens_with_assistant = Example(conversation(("assistant", "Hello!"), ("user", "Hi"), ("assistant", "Hi")))
    with pytest.raises(TemplateError) as info:
        ExampleFormatter(chat_tokenizer, template="chat").encode(opens_with_assistant)
    message = str(info.value)
    assert message.startswith("the chat template cannot render a conversation with roles "
                              "[assistant, user, assistant] (")
    assert message.endswith("); fix that conversation or use --template qa")

    strict = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with a user turn') }}"
              "{% endif %}") + make_chat_tokenizer().chat_template
    with pytest.raises(TemplateError) as info:
        ExampleFormatter(make_chat_tokenizer(strict), template="chat").encode(Example(SYSTEM_MULTI_TURN))
    assert str(info.value) == ("the chat template cannot render a conversation with roles [system, user, assistant, "
                               "user, assistant] (Conversations must start with a user turn); "
                               "fix that conversation or use --template qa")

    # the qa template trains such an opening turn with no prompt before it
    row = ExampleFormatter(qa_tokenizer, template="qa").encode(opens_with_assistant)
    first = ids(qa_tokenizer, " Hello!") + [qa_tokenizer.eos_token_id]
    assert row["input_ids"][: len(first)] == row["labels"][: len(first)] == first


# ------------------------------------------------------------------------------------------ template resolution


def test_resolve_template(qa_tokenizer, chat_tokenizer):
    assert resolve_template("auto", qa_tokenizer) == "qa"
    assert resolve_template("auto", chat_tokenizer) == "chat"
    assert resolve_template("qa", chat_tokenizer) == "qa"
    assert resolve_template("chat", chat_tokenizer) == "chat"
    with pytest.raises(TemplateError) as info:
        resolve_template("chat", qa_tokenizer)
    assert str(info.value) == ("--template chat was asked for, but this tokenizer has no chat template; "
                               "use --template qa (or auto)")
    with pytest.raises(TemplateError) as info:
        ExampleFormatter(qa_tokenizer, template="chat")
    assert "has no chat template" in str(info.value)
    with pytest.raises(TemplateError) as info:
        resolve_template("alpaca", qa_tokenizer)
    assert str(info.value) == "unknown template 'alpaca'; choose one of auto, qa, chat"


def test_qa_template_forced_on_a_chat_tokenizer(chat_tokenizer):
    tok = chat_tokenizer
    row = ExampleFormatter(tok, template="qa").encode(Example.from_qa("What is TCP?", "A protocol."))
    # "Question", "Answer" and ":" are not in this toy vocabulary: they are <unk>, but still masked by position
    prompt = tokens(tok, "<unk>", "<unk>", "What", "is", "TCP", "?", "<unk>", "<unk>")
    answer = tokens(tok, "A", "protocol", ".", "<|im_end|>")
    assert row["input_ids"] == prompt + answer and row["labels"] == [M] * 8 + answer


def test_tokenizer_without_eos_is_refused(make_chat_tokenizer):
    tok = make_chat_tokenizer(eos_token=None)
    assert tok.eos_token_id is None
    with pytest.raises(TemplateError) as info:
        ExampleFormatter(tok)
    assert str(info.value) == "the tokenizer has no EOS token; set tokenizer.eos_token before formatting"


# ------------------------------------------------------------------------------------------ prompt_ids


@pytest.mark.parametrize("which", ["qa", "chat"])
def test_prompt_ids_is_the_masked_prefix(which, qa_tokenizer, chat_tokenizer):
    tok = qa_tokenizer if which == "qa" else chat_tokenizer
    fmt = ExampleFormatter(tok, template=which)
    messages = Example.from_qa("What is TCP?", "A transport protocol.").messages
    row = fmt.encode(Example(messages))
    n_masked = row["labels"].index(next(label for label in row["labels"] if label != M))
    assert n_masked > 0 and set(row["labels"][:n_masked]) == {M}
    assert fmt.prompt_ids(messages) == row["input_ids"][:n_masked]
    assert fmt.prompt_ids(messages[:1]) == row["input_ids"][:n_masked]  # ending with the user turn: same prompt


@pytest.mark.parametrize("which", ["qa", "chat"])
def test_prompt_ids_multi_turn_stops_before_the_last_answer(which, qa_tokenizer, chat_tokenizer):
    tok = qa_tokenizer if which == "qa" else chat_tokenizer
    fmt = ExampleFormatter(tok, template=which)
    row = fmt.encode(Example(SYSTEM_MULTI_TURN))
    last_answer = fmt.segments(SYSTEM_MULTI_TURN)[-1][0]
    assert fmt.prompt_ids(SYSTEM_MULTI_TURN) == row["input_ids"][: row["length"] - len(last_answer)]
    if which == "qa":
        assert tok.decode(fmt.prompt_ids(SYSTEM_MULTI_TURN)) == (
            "Be brief.\nQuestion: What is TCP?\nAnswer: A transport protocol.<|endoftext|>Question: Thanks!\nAnswer:")
    else:
        assert tok.convert_ids_to_tokens(fmt.prompt_ids(SYSTEM_MULTI_TURN))[-2:] == ["<|im_start|>", "assistant"]


# ------------------------------------------------------------------------------------------ truncation


def test_truncation_by_max_seq_length(qa_tokenizer):
    tok = qa_tokenizer
    eos = tok.eos_token_id
    prompt = ids(tok, "Question: What is TCP?\nAnswer:")  # 10 tokens
    answer = ids(tok, " A transport protocol.") + [eos]  # 6 tokens
    longer = ids(tok, " A transport protocol. A transport protocol.") + [eos]
    fits = Example.from_qa("What is TCP?", "A transport protocol.")  # exactly 16 tokens
    cut = Example.from_qa("What is TCP?", "A transport protocol. A transport protocol.")
    no_answer = Example.from_qa("What is a router? " * 3, "Gone.")  # the prompt alone is longer than 16 tokens
    fmt = ExampleFormatter(tok, template="qa", max_seq_length=16)

    assert fmt.encode(fits) == {"input_ids": prompt + answer, "labels": [M] * 10 + answer, "length": 16,
                                "truncated": False}
    row = fmt.encode(cut)
    assert row == {"input_ids": (prompt + longer)[:16], "labels": [M] * 10 + longer[:6], "length": 16,
                   "truncated": True}
    assert eos not in row["labels"]  # the cut took the EOS with it
    row = fmt.encode(no_answer)
    assert (row["length"], row["truncated"], set(row["labels"])) == (16, True, {M})

    dataset, stats = fmt.encode_all([fits, cut, no_answer])
    assert (stats.examples, stats.truncated, stats.dropped_no_answer) == (2, 1, 1)
    assert stats.lengths == [16, 16] and stats.answer_tokens == 6 + 6
    assert dataset.column_names == ["input_ids", "labels", "length"]
    assert dataset["input_ids"] == [prompt + answer, (prompt + longer)[:16]]
    assert dataset["labels"] == [[M] * 10 + answer, [M] * 10 + longer[:6]]
    assert dataset["length"] == [16, 16]
    assert stats.warnings(16) == [
        "1 example(s) were longer than --max-seq-length 16 tokens and were cut at the end "
        "(raise --max-seq-length to keep them whole)",
        "1 example(s) were left out because --max-seq-length 16 cut away their whole answer "
        "(raise --max-seq-length or shorten the questions)",
    ]
    # with room for everything: no warnings, nothing dropped
    _, stats = ExampleFormatter(tok, template="qa", max_seq_length=64).encode_all([fits, cut, no_answer])
    assert (stats.examples, stats.truncated, stats.dropped_no_answer, stats.warnings(64)) == (3, 0, 0, [])
    # train_on_prompt keeps the example whose answer was cut away (its prompt is trained)
    _, stats = ExampleFormatter(tok, template="qa", max_seq_length=16, train_on_prompt=True).encode_all(
        [fits, cut, no_answer])
    assert (stats.examples, stats.truncated, stats.dropped_no_answer) == (3, 2, 0)


def test_format_stats_summary():
    assert FormatStats().summary() == "no examples"
    assert FormatStats().warnings(512) == []
    stats = FormatStats(examples=4, lengths=[10, 20, 30, 100], answer_tokens=42)
    assert stats.summary() == "4 examples, 160 tokens (mean 40.0, p90 100, max 100), 42 answer tokens"


def test_very_long_record_is_cut_by_tokens_not_characters(tmp_path, qa_tokenizer):
    """A 2 MB answer loads whole; the cut is by tokens, and the decoded text is a clean prefix (no broken 'é')."""
    tok = qa_tokenizer
    answer = "café crème thé " * 130_000  # 1,950,000 characters, 2.3 MB in UTF-8
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"question": "What is a café?", "answer": answer}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    (example,) = load_examples(path).examples
    assert example.answer == answer
    fmt = ExampleFormatter(tok, template="qa", max_seq_length=64)
    dataset, stats = fmt.encode_all([example])
    assert (stats.examples, stats.truncated, stats.lengths) == (1, 1, [64])
    row = dataset[0]
    full_text = f"Question: What is a café?\nAnswer: {answer}"
    for n in range(12, 65):  # every cut point decodes to a prefix of the text, never to half a character
        text = tok.decode(row["input_ids"][:n])
        assert "\ufffd" not in text and full_text.startswith(text), n
        text.encode("utf-8", errors="strict")
    assert row["labels"][-1] == row["input_ids"][-1]  # the kept part of the answer is trained


def test_unseen_multibyte_characters_are_bytes(qa_tokenizer):
    """Characters the byte-level BPE never saw are one token per byte: a cut can fall inside such a character.

    The model is trained on valid byte tokens either way; only decoding the cut prefix shows U+FFFD.
    """
    tok = qa_tokenizer
    fmt = ExampleFormatter(tok, template="qa", max_seq_length=12)
    row = fmt.encode(Example.from_qa("What is TCP?", "日本"))
    assert tok.convert_ids_to_tokens(row["input_ids"][10:]) == ["Ġ", "æ"]  # first byte of 日
    assert row["truncated"] and tok.decode(row["input_ids"]).endswith(" \ufffd")


def test_special_token_text_in_user_data_stays_text(qa_tokenizer):
    """A literal "<|endoftext|>" inside a question or answer must not become a real EOS (qa template)."""
    fmt = ExampleFormatter(qa_tokenizer, template="qa", max_seq_length=512)
    row = fmt.encode(Example.from_qa("What does <|endoftext|> mean?", "It ends a text: <|endoftext|> marks it."))
    eos = qa_tokenizer.eos_token_id
    assert row["input_ids"].count(eos) == 1 and row["input_ids"][-1] == eos  # only the answer's closing EOS
    assert "<|endoftext|>" in qa_tokenizer.decode(row["input_ids"][:-1])


def test_nothing_left_after_formatting_says_why(tmp_path):
    from theta_ai.config import ConfigError, resolve_config
    from theta_ai.training.run import prepare_run
    from theta_fixtures import tiny_train_config

    with pytest.raises(ConfigError) as err:
        prepare_run(resolve_config(tiny_train_config(tmp_path, max_seq_length=8)))
    assert str(err.value).startswith("no training example is left after formatting: 48 example(s) were left out "
                                     "because --max-seq-length 8 cut away their whole answer")
