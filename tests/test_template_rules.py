"""Formatting by each tokenizer's own rules, on the real tokenizers of four families (``../shared/tokenizers``).

What is trained, token for token: BOS exactly once where the tokenizer or its template puts one, every answer
up to and including the token that closes its turn and nothing the template writes after it, Qwen3's empty
``<think>`` block as prompt, Gemma's ``model`` role; the generation prompt is byte for byte the training
prompt; generation stops on every token a model was trained to end with, and checkpoints keep the model's
own EOS list.
"""

from __future__ import annotations

import copy
import json

import pytest
from families import FAMILIES, family_tokenizer, tiny_family_model

from theta_ai.data import IGNORE_INDEX, Example, ExampleFormatter
from theta_ai.model.tokens import TokenRules, keep_generation_eos, stop_token_ids

QUESTION, ANSWER = "What is DNS?", "It maps names to addresses."
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": ANSWER}, {"role": "user", "content": "Thanks!"},
                {"role": "assistant", "content": "You are welcome."}]

# The whole training text of the question/answer record, as each family's tokenizer and template give it.
QA_TEXT = {
    "gpt2": "Question: What is DNS?\nAnswer: It maps names to addresses.<|endoftext|>",
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is DNS?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nIt maps names to addresses.<|eot_id|>",
    "qwen3": "<|im_start|>user\nWhat is DNS?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
             "It maps names to addresses.<|im_end|>",
    "gemma3": "<bos><start_of_turn>user\nWhat is DNS?<end_of_turn>\n<start_of_turn>model\n"
              "It maps names to addresses.<end_of_turn>",
}
# The trained tokens of each answer of the two-turn conversation (runs of labels that are not -100).
TURN_END = {"gpt2": "<|endoftext|>", "llama3": "<|eot_id|>", "qwen3": "<|im_end|>", "gemma3": "<end_of_turn>"}
LEADING_SPACE = {"gpt2": " "}  # the qa template writes "Answer: <text>"
BOS_COUNT = {"gpt2": 0, "llama3": 1, "qwen3": 0, "gemma3": 1}


def trained_runs(tokenizer, row) -> list[str]:
    """The decoded runs of consecutive trained positions."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def bos_count(tokenizer, ids, labels=None) -> int:
    """BOS ids among the prompt positions (GPT-2's BOS is its EOS, which answers end with and train)."""
    labels = labels if labels is not None else [IGNORE_INDEX] * len(ids)
    return sum(1 for i, label in zip(ids, labels) if i == tokenizer.bos_token_id and label == IGNORE_INDEX)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_question_answer_record_trains_exactly_the_answer_and_its_turn_end(family):
    tok = family_tokenizer(family)
    fmt = ExampleFormatter(tok, max_seq_length=512)
    row = fmt.encode(Example.from_qa(QUESTION, ANSWER))
    assert tok.decode(row["input_ids"]) == QA_TEXT[family]
    assert trained_runs(tok, row) == [LEADING_SPACE.get(family, "") + ANSWER + TURN_END[family]]
    assert bos_count(tok, row["input_ids"], row["labels"]) == BOS_COUNT[family]
    assert row["input_ids"][-1] == tok.convert_tokens_to_ids(TURN_END[family])  # nothing trailing after the turn end
    assert fmt.notes == []


@pytest.mark.parametrize("family", FAMILIES)
def test_a_multi_turn_conversation_trains_each_answer_and_nothing_the_template_adds_after_it(family):
    tok = family_tokenizer(family)
    row = ExampleFormatter(tok).encode(Example(copy.deepcopy(CONVERSATION)))
    space = LEADING_SPACE.get(family, "")
    assert trained_runs(tok, row) == [f"{space}{ANSWER}{TURN_END[family]}", f"{space}You are welcome.{TURN_END[family]}"]
    assert bos_count(tok, row["input_ids"], row["labels"]) == BOS_COUNT[family]
    text = tok.decode(row["input_ids"])
    if family == "llama3":  # the early template appends an assistant header after every conversation: not trained,
        assert not text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")  # and not even kept
        assert text.count("<|start_header_id|>assistant") == 2
    if family == "qwen3":  # the empty think block sits before the last answer only, as prompt
        assert text.count("<think>\n\n</think>\n\n") == 1
        assert "<think>\n\n</think>\n\nYou are welcome." in text
    if family == "gemma3":  # the assistant role is rendered as "model"; the system text joins the first user turn
        assert text.count("<start_of_turn>model\n") == 2 and "<start_of_turn>user\nBe brief.\n\nWhat is DNS?" in text


@pytest.mark.parametrize("family", FAMILIES)
def test_the_generation_prompt_is_the_training_prompt_byte_for_byte(family):
    tok = family_tokenizer(family)
    fmt = ExampleFormatter(tok)
    for messages in (CONVERSATION, CONVERSATION[1:3]):
        row = fmt.encode(Example(copy.deepcopy(messages)))
        last_answer = max(i for i, label in enumerate(row["labels"])
                          if label == IGNORE_INDEX and i + 1 < len(row["labels"])
                          and row["labels"][i + 1] != IGNORE_INDEX) + 1
        assert fmt.prompt_ids(messages) == row["input_ids"][:last_answer]
        assert fmt.prompt_ids(messages[:-1]) == row["input_ids"][:last_answer]  # ending with the user turn: the same
    if family == "qwen3":  # it is Qwen3's own non-thinking generation prompt
        official = tok.apply_chat_template(CONVERSATION[:-1], add_generation_prompt=True, enable_thinking=False,
                                           tokenize=False)
        assert tok.decode(fmt.prompt_ids(CONVERSATION)) == official
    if family in ("llama3", "gemma3"):  # the template's generation prompt, with its one BOS
        official = tok.apply_chat_template(CONVERSATION[:-1], add_generation_prompt=True, tokenize=False)
        assert tok.decode(fmt.prompt_ids(CONVERSATION)) == official
        assert bos_count(tok, fmt.prompt_ids(CONVERSATION)) == 1


def test_a_literal_turn_end_in_an_answer_stays_text():
    tok = family_tokenizer("qwen3")
    row = ExampleFormatter(tok).encode(Example.from_qa("How do I end a turn?", "Write <|im_end|> at the end."))
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    assert trained.count(im_end) == 1 and trained[-1] == im_end
    assert tok.decode(trained) == "Write <|im_end|> at the end.<|im_end|>"


def test_the_qa_template_puts_bos_where_the_family_expects_it():
    """qa template (no chat template used): the tokenizer's own BOS (Gemma), the BOS a template writes first
    (Llama-3's tokenizer adds none; its template does), none for GPT-2 and Qwen."""
    for family, expected in (("gpt2", []), ("qwen3", []), ("gemma3", ["<bos>"]), ("llama3", ["<|begin_of_text|>"])):
        tok = family_tokenizer(family)
        fmt = ExampleFormatter(tok, template="qa")
        row = fmt.encode(Example(copy.deepcopy(CONVERSATION)))
        assert tok.convert_ids_to_tokens(row["input_ids"][: len(expected)]) == expected, family
        assert bos_count(tok, row["input_ids"], row["labels"]) == len(expected), family
        assert fmt.prompt_ids(CONVERSATION)[: len(expected)] == row["input_ids"][: len(expected)]
        assert tok.decode(row["input_ids"][len(expected):]).startswith("Be brief.\nQuestion: What is DNS?\nAnswer:")


def llama2_style_tokenizer(chat_template: str | None = None):
    """A sentencepiece-style setup as Llama-2 and Mistral ship it: the tokenizer itself adds ``<s>`` to every
    text, EOS ``</s>``, no chat template (GPT-2's byte-level vocabulary underneath, offline)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(family_tokenizer("gpt2").backend_tokenizer)
    backend.add_special_tokens(["<s>", "</s>"])
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    tok.chat_template = chat_template
    return tok


def test_a_tokenizer_that_adds_bos_gets_it_once_in_training_and_in_the_prompt():
    tok = llama2_style_tokenizer()
    assert tok("Hi")["input_ids"][0] == tok.bos_token_id
    fmt = ExampleFormatter(tok, template="auto")
    assert fmt.template == "qa" and fmt.rules.bos_ids == (tok.bos_token_id,)
    row = fmt.encode(Example(copy.deepcopy(CONVERSATION)))
    assert tok.decode(row["input_ids"]) == ("<s>Be brief.\nQuestion: What is DNS?\nAnswer: It maps names to "
                                            "addresses.</s>Question: Thanks!\nAnswer: You are welcome.</s>")
    assert bos_count(tok, row["input_ids"], row["labels"]) == 1 and row["labels"][0] == IGNORE_INDEX
    assert fmt.prompt_ids(CONVERSATION[:2])[0] == tok.bos_token_id


def test_a_template_that_writes_no_bos_for_a_tokenizer_that_adds_one_gets_it_once_and_says_so():
    template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    tok = llama2_style_tokenizer(template)
    fmt = ExampleFormatter(tok)
    row = fmt.encode(Example.from_qa(QUESTION, ANSWER))
    assert tok.decode(row["input_ids"]) == f"<s><|user|>\n{QUESTION}</s>\n<|assistant|>\n{ANSWER}</s>"
    assert trained_runs(tok, row) == [f"{ANSWER}</s>"]
    assert fmt.notes == ["the tokenizer puts '<s>' before every text and the chat template does not write it: each "
                         "example starts with it once"]


def test_a_template_without_a_special_turn_end_trains_eos_after_each_answer_and_says_so():
    tok = copy.deepcopy(family_tokenizer("gpt2"))
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    fmt = ExampleFormatter(tok)
    row = fmt.encode(Example(copy.deepcopy(CONVERSATION)))
    assert tok.decode(row["input_ids"]).startswith("system: Be brief.\nuser: What is DNS?\nassistant: It maps")
    assert trained_runs(tok, row) == [f"{ANSWER}<|endoftext|>", "You are welcome.<|endoftext|>"]
    assert len(fmt.notes) == 1 and "closes an assistant turn with no special token" in fmt.notes[0]


# ------------------------------------------------------------------------------------------------ stopping


def test_stop_ids_are_the_turn_end_the_eos_and_the_models_own_list():
    tok = family_tokenizer("llama3")
    model, _ = tiny_family_model("llama3")
    eot, end_of_text = tok.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])
    assert TokenRules.from_tokenizer(tok).end_ids() == [eot, end_of_text]
    model.generation_config.eos_token_id = end_of_text  # Llama-3 base: EOS only; its turns end with <|eot_id|>
    assert stop_token_ids(model, tok) == [eot, end_of_text]
    instruct = [128001, 128008, 128009]  # Llama-3.1-Instruct's generation_config lists three ids
    model.generation_config.eos_token_id = list(instruct)
    assert keep_generation_eos(model, tok) == []
    assert model.generation_config.eos_token_id == instruct  # kept as the model has it
    model.generation_config.eos_token_id = end_of_text
    assert keep_generation_eos(model, tok) == [eot]
    assert model.generation_config.eos_token_id == [end_of_text, eot]


def test_a_loaded_folder_keeps_the_models_eos_list_and_adds_the_turn_end(tmp_path_factory):
    from families import family_model_dir
    from transformers import GenerationConfig

    from theta_ai.model.load import load_model_and_tokenizer

    folder = tmp_path_factory.mktemp("instruct")
    source = family_model_dir("llama3", tmp_path_factory)
    for file in source.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    GenerationConfig(bos_token_id=128000, eos_token_id=[128001, 128008]).save_pretrained(folder)
    loaded = load_model_and_tokenizer(str(folder))
    assert loaded.model.generation_config.eos_token_id == [128001, 128008, 128009]
    out = tmp_path_factory.mktemp("saved")
    loaded.model.save_pretrained(out)
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [128001, 128008, 128009]


@pytest.mark.parametrize("family", ["llama3"])
def test_generation_stops_on_the_trained_end_token(family):
    """A tiny model trained on one answer writes it and stops on the token that closes its turn (for Llama-3
    base that is <|eot_id|>, not its EOS <|end_of_text|>); the answer text leaves the token out. (Qwen3 and
    Gemma 3 end turns with their EOS; theta-eval on each family is in test_families.py.)"""
    import torch

    from theta_ai.eval.generation import generate_answers

    model, tok = tiny_family_model(family, seed=1)
    model.generation_config.eos_token_id = tok.eos_token_id  # only the EOS, as a base model's config says
    fmt = ExampleFormatter(tok)
    example = Example.from_qa(QUESTION, "Names to numbers.")
    row = fmt.encode(example)
    ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(80):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < 0.01:
            break
    assert loss.item() < 0.05
    [generation] = generate_answers(model, tok, [fmt.prompt_ids(example.messages)], max_new_tokens=20)
    turn_end = tok.convert_tokens_to_ids(TURN_END[family])
    assert generation.text == "Names to numbers." and generation.hit_eos and not generation.truncated
    assert generation.new_tokens == len(generation.token_ids) + 1 == len(tok("Names to numbers.",
                                                                           add_special_tokens=False)["input_ids"]) + 1
    if family == "llama3":
        assert turn_end != tok.eos_token_id and turn_end in stop_token_ids(model, tok)
