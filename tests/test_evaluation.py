"""theta-eval's library side: batched generation, answer loss, error categories, tables, outputs, callback."""

from __future__ import annotations

import json
import math
import random
import socket
from types import SimpleNamespace

import pytest

from theta_ai.training import checkpoints as ckpt
from theta_ai.data import DataError, Example, ExampleFormatter, PaddingCollator
from theta_ai.eval.analysis import (PRECEDENCE, categorize, category_table, echoes_question, example_responses,
                                     is_repetition_loop, length_stats, worst_examples)
from theta_ai.eval.runner import (EvalSettings, check_model_folder, default_data, evaluate_examples, evaluate_model,
                                 log_to_tensorboard, write_outputs)
from theta_ai.eval.generation import answer_losses, clean_answer, fit_prompts, generate_answers, select_subset
from theta_ai.metrics import PER_EXAMPLE_KEYS, TEXT_METRIC_KEYS, compute_text_metrics
from theta_ai.model.load import ModelLoadError

COUNTRIES = [("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Japan", "Tokyo"),
             ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Cuba", "Havana")]
TERMS = [("TCP", "a reliable transport protocol"), ("UDP", "a connectionless transport protocol"),
         ("HTTP", "the protocol of the web"), ("Git", "a version control system")]


def make_examples() -> list[Example]:
    examples = [Example.from_qa(f"What is the capital of {c}?", f"The capital of {c} is {k}.", "geography")
                for c, k in COUNTRIES]
    examples += [Example.from_qa(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", "math")
                 for a in range(2, 6) for b in (3, 5)]
    examples += [Example.from_qa(f"Can you explain what {t} means in computing, briefly?", f"{t} is {d}.", "programming")
                 for t, d in TERMS]
    return examples


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """A 1M-parameter model runs fastest on one thread; on a busy 2-core machine OpenMP threads spin
    against other processes (measured: 20 ms per training step on one thread, 600 ms on two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """theta-tiny trained for 40 quick steps (it learns the answer pattern and to stop at EOS), saved as a
    theta-train-style model folder with theta_run.json and theta_validation.jsonl."""
    import torch

    from theta_ai.model.load import build_theta_tiny, training_texts
    from theta_ai.training.run import examples_to_jsonl

    examples = make_examples()
    loaded = build_theta_tiny(training_texts(examples), seed=0)
    model, tokenizer = loaded.model, loaded.tokenizer
    formatter = ExampleFormatter(tokenizer, "qa", 128)
    dataset, _ = formatter.encode_all(examples)
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in dataset]
    collate = PaddingCollator(tokenizer.pad_token_id)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    model.train()
    for _ in range(40):
        model(**collate(rng.sample(rows, 8))).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    folder = tmp_path_factory.mktemp("tiny") / "theta_final"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / ckpt.RUN_INFO).write_text(json.dumps({"template": "qa", "max_seq_length": 128, "global_step": 40}))
    (folder / ckpt.VALIDATION_FILE).write_text(examples_to_jsonl(examples[::2]), encoding="utf-8")
    return SimpleNamespace(model=model, tokenizer=tokenizer, formatter=formatter, examples=examples, folder=folder)


def _tie_gap(model, prompt, a, b) -> float:
    """Logit gap between the two tokens at the first place two greedy answers differ (a float-rounding tie if tiny)."""
    import torch

    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if k is None:
        return float("inf")  # one is a prefix of the other: a stop decision differed, which is no tie
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + a[:k]])).logits[0, -1]
    return abs(float(logits[a[k]] - logits[b[k]]))


# ---------------------------------------------------------------------------- generation


def test_batched_generation_equals_one_at_a_time(tiny):
    prompts = [tiny.formatter.prompt_ids(e.messages) for e in tiny.examples]
    assert len({len(p) for p in prompts}) >= 3  # different lengths, so the batches really are left-padded
    batched = generate_answers(tiny.model, tiny.tokenizer, prompts, batch_size=8, max_new_tokens=20)
    single = generate_answers(tiny.model, tiny.tokenizer, prompts, batch_size=1, max_new_tokens=20)
    assert any(g.hit_eos for g in single)
    for prompt, b, s in zip(prompts, batched, single):
        assert b.prompt_tokens == s.prompt_tokens == len(prompt)
        if b.token_ids != s.token_ids:  # allowed only where the two best tokens tie to float rounding
            assert _tie_gap(tiny.model, prompt, b.token_ids, s.token_ids) < 1e-4
        else:
            assert (b.text, b.hit_eos, b.truncated, b.new_tokens) == (s.text, s.hit_eos, s.truncated, s.new_tokens)
    # returned in the original order: each answer belongs to its own question
    assert batched[0].text == generate_answers(tiny.model, tiny.tokenizer, prompts[:1], max_new_tokens=20)[0].text


def test_generation_stops_and_flags(tiny):
    prompts = [tiny.formatter.prompt_ids(e.messages) for e in tiny.examples[:6]]
    short = generate_answers(tiny.model, tiny.tokenizer, prompts, batch_size=3, max_new_tokens=2)
    for g in short:
        assert g.new_tokens <= 2
        assert g.truncated == (not g.hit_eos and not g.ran_on)
    assert any(g.truncated for g in short)
    full = generate_answers(tiny.model, tiny.tokenizer, prompts, batch_size=3, max_new_tokens=40)
    for g in full:
        assert "<|endoftext|>" not in g.text and g.text == g.text.strip()
        if g.hit_eos:  # the EOS counts as a generated token but is not part of the answer
            assert g.new_tokens == len(g.token_ids) + 1 and not g.truncated
    assert tiny.model.training is False


def test_stop_strings_would_change_answers_and_flags(tiny):
    """Why generate_answers cuts at ``Question:`` itself instead of passing ``stop_strings`` to generate: with
    the same (scripted) tokens, stop_strings ends an answer inside a word, leaves the stop string in the text,
    and pads the stopped row with the pad id, which is the EOS id here (so the row would read as hit_eos)."""
    import torch
    from transformers import LogitsProcessor

    from theta_ai.eval.generation import stop_token_ids

    tok = tiny.tokenizer
    eos = tok.eos_token_id
    assert tok.pad_token_id == eos
    scripts = [tok.encode(" The word SubQuestion: counts.", add_special_tokens=False) + [eos],
               tok.encode(" 4.\nQuestion: What is 2 plus 2?\nAnswer: 4.", add_special_tokens=False) + [eos]]
    prompt = tiny.formatter.prompt_ids(tiny.examples[0].messages)

    class Script(LogitsProcessor):  # forces each row's scripted tokens
        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - len(prompt)
            forced = torch.full_like(scores, float("-inf"))
            for row, script in enumerate(scripts):
                forced[row, script[min(step, len(script) - 1)]] = 0
            return forced

    ids = torch.tensor([prompt, prompt])
    kwargs = {"attention_mask": torch.ones_like(ids), "max_new_tokens": 30, "do_sample": False, "pad_token_id": eos,
              "eos_token_id": stop_token_ids(tiny.model, tok), "logits_processor": [Script()]}
    with torch.inference_mode():
        plain = tiny.model.generate(ids, **kwargs)[:, len(prompt):].tolist()
        stopped = tiny.model.generate(ids, stop_strings=["Question:"], tokenizer=tok, **kwargs)[:, len(prompt):].tolist()

    def text(row):
        return tok.decode(row, skip_special_tokens=True)

    assert clean_answer(text(plain[0])) == ("The word SubQuestion: counts.", False)  # no turn: kept whole
    assert clean_answer(text(stopped[0])) == ("The word SubQuestion:", False)  # stop_strings: cut mid-answer
    assert clean_answer(text(plain[1])) == clean_answer(text(stopped[1])) == ("4.", True)
    assert text(stopped[1]) == " 4.\nQuestion:"  # the stop string stays: the cut is needed anyway
    ran_on = len(tok.encode(" 4.\nQuestion:", add_special_tokens=False))
    assert stopped[1][ran_on:] and set(stopped[1][ran_on:]) == {eos}  # padded with the EOS id: reads as hit_eos
    assert plain[1][:ran_on] == stopped[1][:ran_on] and plain[1][ran_on] != eos  # it ran on, no EOS there


def test_clean_answer_cuts_a_following_turn():
    assert clean_answer(" Paris.\nQuestion: What is 2 plus 2?\nAnswer: 4") == ("Paris.", True)
    assert clean_answer(" Paris. Question: next") == ("Paris.", True)
    assert clean_answer("Question: only a new turn") == ("", True)
    assert clean_answer("The word Questions: is not a turn") == ("The word Questions: is not a turn", False)
    assert clean_answer("  plain answer \n") == ("plain answer", False)


def test_fit_prompts_and_subset():
    prompts, cut = fit_prompts([[1, 2, 3, 4], [5, 6]], 3)
    assert prompts == [[2, 3, 4], [5, 6]] and cut == [True, False]
    assert fit_prompts([[1, 2]], None) == ([[1, 2]], [False])
    assert select_subset(10, 4, seed=1) == select_subset(10, 4, seed=1)
    assert select_subset(10, 4, seed=1) != select_subset(10, 4, seed=2)
    assert select_subset(3, 5, seed=0) == [0, 1, 2] and select_subset(3, None, seed=0) == [0, 1, 2]


def test_answer_loss_is_the_training_loss_on_answer_tokens(tiny):
    import torch

    examples = tiny.examples[:5]
    losses = answer_losses(tiny.model, tiny.formatter, examples, batch_size=2)
    for example, (nll, count) in zip(examples, losses):
        row = tiny.formatter.encode(example)
        assert count == sum(1 for label in row["labels"][1:] if label != -100)
        with torch.inference_mode():
            reference = tiny.model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss
        assert nll / count == pytest.approx(float(reference), rel=1e-4)


# ---------------------------------------------------------------------------- error categories


@pytest.mark.parametrize("prediction, reference, question, truncated, expected", [
    ("   ", "Paris.", "Capital of France?", False, "empty"),
    ("", "Paris.", "Capital of France?", True, "empty"),                       # empty beats truncated
    ("the PARIS!", "Paris", "Capital of France?", True, "correct"),             # correct beats truncated
    ("paris paris paris paris paris paris paris paris", "Paris", "Capital of France?", True, "repetition"),
    ("it is it is it is it is it is", "Berlin is the capital.", "What is it?", False, "repetition"),
    ("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", "Yes.", "Really?", False, "repetition"),  # character-level loop
    ("What is the capital of France?", "Paris.", "What is the capital of France?", False, "echo"),
    ("capital of France", "Paris.", "What is the capital of France?", True, "echo"),   # echo beats truncated
    ("The capital of France is", "The capital of France is Paris.", "What is the capital of France?", True,
     "truncated"),                                                                  # restates like the reference
    ("The capital of France is Lyon.", "The capital of France is Paris.", "Which city?", False, "close"),
    ("Lyon is a big city in France.", "Paris is the capital of France.", "Which city?", False, "partial"),
    ("Bananas are yellow.", "Paris is the capital of France.", "Which city?", False, "wrong"),
    # one shared word ("is", F1 0.15) in a long answer is not partial
    ("Bananas are yellow and it is sunny today.", "Paris is the capital of France.", "Which city?", False, "wrong"),
])
def test_categorize(prediction, reference, question, truncated, expected):
    scores = compute_text_metrics([prediction], [reference])
    assert categorize(prediction, reference, question, scores, truncated) == expected


def test_category_thresholds_by_score():
    base = {"exact_match": 0.0, "f1": 0.0, "rougeL": 0.0}
    assert categorize("x y", "a b", "q", base | {"rougeL": 0.5}) == "close"
    assert categorize("x y", "a b", "q", base | {"rougeL": 0.49}) == "partial"
    assert categorize("x y", "a b", "q", base | {"f1": 0.2}) == "partial"
    assert categorize("x y", "a b", "q", base | {"f1": 0.19, "rougeL": 0.19}) == "wrong"
    assert categorize("x y", "a b", "q", base | {"rougeL": 0.9}, truncated=True) == "truncated"


def test_repetition_and_echo_rules():
    assert is_repetition_loop("the cat sat the cat sat the cat sat the cat")
    assert not is_repetition_loop("TCP is a reliable, connection-oriented transport protocol used on the internet.")
    assert not is_repetition_loop("no no no")  # too short to call a loop
    assert not is_repetition_loop("one two three four five six seven one two")
    assert echoes_question("What is TCP?", "What is TCP?", "A transport protocol.")
    assert not echoes_question("TCP is a transport protocol.", "What is TCP?", "TCP is a transport protocol.")


def _row(i, rouge_l, f1=0.0, category="wrong", domain="d", pred="a b", ref="a b c d"):
    return {"index": i, "rougeL": rouge_l, "f1": f1, "exact_match": 0.0, "answer_recall": 0.0,
            "category": category, "domain": domain, "pred_words": len(pred.split()), "ref_words": len(ref.split()),
            "prediction": pred, "reference": ref, "question": "q", "new_tokens": 3}


def test_tables_and_example_picks():
    rows = [_row(0, 0.9, category="close"), _row(1, 0.1), _row(2, 0.5, category="close"), _row(3, 0.1, f1=0.3),
            _row(4, 0.0, pred="a b c d e f g h i j")]
    table = category_table(rows)
    assert list(table) == list(PRECEDENCE)
    assert table["close"]["count"] == 2 and table["close"]["rougeL"] == pytest.approx(0.7)
    assert table["wrong"]["share"] == pytest.approx(0.6) and table["empty"] == {"count": 0, "share": 0.0}
    assert [r["index"] for r in worst_examples(rows, 3)] == [4, 1, 3]  # ties on ROUGE-L: lower F1 first
    picks = example_responses(rows, 1)
    assert [r["index"] for r in picks["best"]] == [0]
    assert [r["index"] for r in picks["worst"]] == [4]
    assert example_responses(rows, 3)["worst"] == worst_examples(rows, 3)  # one order for ties everywhere
    assert [r["index"] for r in picks["median"]] == [3]  # ranked 0, 2, 3, 1, 4
    lengths = length_stats(rows)
    assert lengths["prediction"]["mean"] == pytest.approx((2 * 4 + 10) / 5)
    assert lengths["reference"]["median"] == 4 and lengths["much_longer"] == 1 and lengths["much_shorter"] == 0
    assert lengths["mean_ratio"] == pytest.approx(3.6 / 4)


# ---------------------------------------------------------------------------- evaluate_examples / evaluate_model


def test_evaluate_examples_scores_are_consistent(tiny):
    examples = tiny.examples
    result = evaluate_examples(tiny.model, tiny.tokenizer, tiny.formatter, examples,
                               EvalSettings(batch_size=5, max_new_tokens=24, num_examples=2))
    rows, res = result.predictions, result.results
    assert len(rows) == len(examples) == res["num_examples"]
    assert [r["index"] for r in rows] == list(range(len(examples)))
    assert [r["reference"] for r in rows] == [e.answer for e in examples]
    # the prompt is the training prompt
    assert [r["prompt_tokens"] for r in rows] == [len(tiny.formatter.prompt_ids(e.messages)) for e in examples]
    # corpus metrics are the metric modules' numbers on the predictions
    direct = compute_text_metrics([r["prediction"] for r in rows], [r["reference"] for r in rows])
    for key in TEXT_METRIC_KEYS:
        assert res["metrics"][key] == pytest.approx(direct[key])
        if key in PER_EXAMPLE_KEYS:
            assert res["metrics"][key] == pytest.approx(sum(r[key] for r in rows) / len(rows))
    # perplexity = exp(token-weighted mean answer loss)
    total = sum(r["answer_loss"] * r["answer_tokens"] for r in rows)
    assert res["metrics"]["perplexity"] == pytest.approx(math.exp(total / res["metrics"]["answer_tokens"]))
    assert sum(c["count"] for c in res["per_category"].values()) == len(rows)
    assert {d: v["count"] for d, v in res["per_domain"].items()} == {"geography": 10, "math": 8, "programming": 4}
    for domain, v in res["per_domain"].items():
        assert sum(v["categories"].values()) == v["count"]
    assert len(res["worst_examples"]) == 2 and set(res["example_responses"]) == {"best", "median", "worst"}
    for r in rows:  # truncated means: no stop token and no cut at a following turn
        assert r["truncated"] == (not r["hit_eos"] and not r["ran_on"] and r["new_tokens"] == 24)
    assert res["generation"]["hit_eos"] == sum(r["hit_eos"] for r in rows)
    # deterministic
    again = evaluate_examples(tiny.model, tiny.tokenizer, tiny.formatter, examples,
                              EvalSettings(batch_size=3, max_new_tokens=24, num_examples=2))
    assert [r["prediction"] for r in again.predictions] == [r["prediction"] for r in rows]


def test_prompts_too_long_for_the_context_are_cut_from_the_left(tiny):
    settings = EvalSettings(batch_size=4, max_new_tokens=500)  # theta-tiny has 512 positions: 12 left for prompts
    result = evaluate_examples(tiny.model, tiny.tokenizer, tiny.formatter, tiny.examples[-4:], settings)
    assert all(r["prompt_truncated"] and r["prompt_tokens"] == 12 for r in result.predictions)
    from theta_ai.config import ConfigError

    with pytest.raises(ConfigError, match="leaves no room"):
        evaluate_examples(tiny.model, tiny.tokenizer, tiny.formatter, tiny.examples[:1], EvalSettings(max_new_tokens=512))


def test_evaluate_model_writes_outputs_offline(tiny, tmp_path, monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = evaluate_model(tiny.folder, settings=EvalSettings(batch_size=4, max_new_tokens=16, num_examples=3))
    assert attempts == []
    assert result.results["data"] == [str(tiny.folder / ckpt.VALIDATION_FILE)]
    assert result.results["num_examples"] == len(tiny.examples[::2])
    assert result.results["settings"]["template"] == "qa" and result.results["run_info"]["global_step"] == 40
    assert set(result.results["timings"]) >= {"load_s", "generation_s", "perplexity_s", "scoring_s", "total_s"}

    paths = write_outputs(result, tmp_path / "out")
    saved = json.loads(paths["results"].read_text())
    assert set(saved["metrics"]) == set(TEXT_METRIC_KEYS) | {"perplexity", "answer_tokens"}
    lines = paths["predictions"].read_text().splitlines()
    assert [json.loads(line)["prediction"] for line in lines] == [r["prediction"] for r in result.predictions]
    report = paths["report"].read_text()
    for heading in ("## Metrics", "## Error categories", "## Per domain", "## Lengths", "## Worst examples",
                    "## Example responses"):
        assert heading in report
    assert saved["signatures"]["bleu"] in report

    # a subset drawn with the seed
    subset = evaluate_model(tiny.folder, settings=EvalSettings(max_new_tokens=8, max_examples=3, seed=5))
    assert subset.results["num_examples"] == 3


def test_tensorboard_scalars_and_text(tiny, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = evaluate_examples(tiny.model, tiny.tokenizer, tiny.formatter, tiny.examples[:6],
                               EvalSettings(max_new_tokens=12, num_examples=2))
    result.results["run_info"] = {"global_step": 40}
    log_to_tensorboard(result, tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for key in ("rougeL", "bleu", "exact_match", "perplexity"):
        (point,) = events.Scalars(f"theta_eval/{key}")
        assert point.step == 40 and point.value == pytest.approx(result.metrics[key], rel=1e-6)
    assert "theta_eval_category/wrong" in scalars and any(t.startswith("theta_eval_domain/") for t in scalars)
    assert any("theta_eval_examples" in tag for tag in events.Tags()["tensors"])


def test_bad_model_folders_and_missing_validation(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_model_folder(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        check_model_folder(tmp_path / "file.txt")
    (tmp_path / "models" / "theta_best").mkdir(parents=True)
    (tmp_path / "models" / "theta_best" / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="holds no model.*theta_best"):
        check_model_folder(tmp_path / "models")
    with pytest.raises(DataError, match="pass --data"):
        default_data(tmp_path / "models" / "theta_best")
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"question": "q?", "answer": "a."}]))
    with pytest.raises(ModelLoadError, match="holds no loadable"):  # an empty config.json is no model
        evaluate_model(tmp_path / "models" / "theta_best", data=[data])


def test_multi_turn_conversation_uses_the_last_question(tiny):
    example = Example([{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "2 plus 3 is 5."},
                       {"role": "user", "content": "What is the capital of Peru?"},
                       {"role": "assistant", "content": "The capital of Peru is Lima."}], "geography")
    result = evaluate_examples(tiny.model, tiny.tokenizer, tiny.formatter, [example], EvalSettings(max_new_tokens=16))
    row = result.predictions[0]
    assert row["question"] == "What is the capital of Peru?" and row["reference"] == "The capital of Peru is Lima."
    assert row["prompt_tokens"] == len(tiny.formatter.prompt_ids(example.messages))


def test_chat_template_model_folder(tmp_path):
    """Any causal LM folder: a Llama with a ChatML template, no theta_run.json (template auto -> chat)."""
    from theta_fixtures import build_tiny_llama

    from theta_ai.eval.runner import load_eval_model
    from theta_ai.eval.generation import stop_token_ids

    examples = make_examples()[::3]
    folder = build_tiny_llama(tmp_path / "llama", [m["content"] for e in make_examples() for m in e.messages] * 3)
    loaded = load_eval_model(folder, device="cpu")
    assert loaded.formatter.template == "chat" and loaded.formatter.max_seq_length == 256
    prompt = loaded.formatter.prompt_ids(examples[0].messages)
    rendered = loaded.tokenizer.apply_chat_template(examples[0].messages[:1], add_generation_prompt=True, tokenize=False)
    assert loaded.tokenizer.decode(prompt) == rendered
    assert loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(loaded.model, loaded.tokenizer)
    prompts = [loaded.formatter.prompt_ids(e.messages) for e in examples]
    batched = generate_answers(loaded.model, loaded.tokenizer, prompts, batch_size=4, max_new_tokens=6)
    single = generate_answers(loaded.model, loaded.tokenizer, prompts, batch_size=1, max_new_tokens=6)
    for prompt, b, s in zip(prompts, batched, single):  # rotary positions follow the left padding too
        if b.token_ids != s.token_ids:
            assert _tie_gap(loaded.model, prompt, b.token_ids, s.token_ids) < 1e-4
    result = evaluate_examples(loaded.model, loaded.tokenizer, loaded.formatter, examples,
                               EvalSettings(batch_size=4, max_new_tokens=6))
    assert result.results["settings"]["template"] == "chat" and result.metrics["answer_tokens"] > 0


# ---------------------------------------------------------------------------- during training


def test_generation_eval_callback_answers_as_theta_eval_does(tiny):
    """Per epoch and in theta-eval the same questions get the same answers and scores (the callback once cut
    answers at 64 new tokens where theta-eval allows 128, so its ROUGE-L read lower for the same model)."""
    from theta_ai.eval.callback import GenerationEvalCallback
    from theta_ai.model.load import build_theta_tiny, training_texts

    untrained = build_theta_tiny(training_texts(tiny.examples), seed=1)  # never stops: runs to the limit
    formatter = ExampleFormatter(untrained.tokenizer, "qa", 128)
    callback = GenerationEvalCallback(tiny.examples, formatter, num_examples=6, seed=3, batch_size=8)
    metrics = {"eval_loss": 1.0}
    state = SimpleNamespace(log_history=[], global_step=0, is_world_process_zero=True)
    callback.on_evaluate(None, state, None, model=untrained.model, metrics=metrics)
    result = evaluate_examples(untrained.model, untrained.tokenizer, formatter, callback.examples, EvalSettings())
    assert callback.last_predictions == [row["prediction"] for row in result.predictions]
    assert max(row["new_tokens"] for row in result.predictions) == EvalSettings().max_new_tokens == 128
    assert metrics["eval_rougeL"] == pytest.approx(result.metrics["rougeL"], abs=1e-12)
    assert metrics["eval_f1"] == pytest.approx(result.metrics["f1"], abs=1e-12)


def test_generation_eval_callback_feeds_metric_for_best_model(tiny, tmp_path):
    import copy

    from transformers import Trainer, TrainingArguments

    from theta_ai.eval.callback import GenerationEvalCallback

    model = copy.deepcopy(tiny.model)  # training changes it; the other tests keep the fixture's weights

    dataset, _ = tiny.formatter.encode_all(tiny.examples)
    callback = GenerationEvalCallback(tiny.examples, tiny.formatter, num_examples=6, seed=3, max_new_tokens=16)
    assert len(callback.examples) == 6
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, per_device_train_batch_size=8,
                             learning_rate=1e-4, eval_strategy="epoch", save_strategy="epoch", report_to="none",
                             metric_for_best_model="eval_rougeL", greater_is_better=True, remove_unused_columns=False,
                             use_cpu=True, disable_tqdm=True, save_only_model=True)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset,
                      data_collator=PaddingCollator(tiny.tokenizer.pad_token_id), callbacks=[callback])
    trainer.train()
    evals = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert evals and {"eval_rougeL", "eval_bleu", "eval_exact_match", "eval_f1"} <= set(evals[-1])
    assert trainer.state.best_metric == pytest.approx(evals[-1]["eval_rougeL"])
    expected = compute_text_metrics(callback.last_predictions, [e.answer for e in callback.examples])
    assert evals[-1]["eval_rougeL"] == pytest.approx(expected["rougeL"])
    with pytest.raises(ValueError, match="unknown generation metric"):
        GenerationEvalCallback(tiny.examples, tiny.formatter, metrics=("rougeX",))
