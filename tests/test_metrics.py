"""Metrics: hand-computed EM/F1/recall, ROUGE and sacreBLEU checked against the libraries called directly,
the shipped evaluate modules loading offline from their local path, and Trainer's compute_metrics."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cli_runner import NETWORK_GUARD

from theta_ai import metrics as M
from theta_ai.metrics import text as T

ROOT = Path(__file__).resolve().parents[1]

PAIRS = [  # (prediction, reference)
    ("The capital of France is Paris.", "Paris is the capital of France."),
    ("It runs over IP. TCP is a reliable transport protocol.", "TCP is a connection-oriented transport protocol. It runs over IP."),
    ("running runners ran quickly", "the runner runs quickly"),
    ("", "Something entirely different."),
    ("cats cats cats", "A cat sat on the mat! It purred."),
    ("Python is a programming language.", "Python is a programming language."),
]
PREDS = [p for p, _ in PAIRS]
REFS = [r for _, r in PAIRS]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------------------- SQuAD-style scores, by hand


@pytest.mark.parametrize("text, expected", [
    ("The  Eiffel Tower, in Paris!", "eiffel tower in paris"),
    ("An apple a day", "apple day"),
    ("theatre anthem", "theatre anthem"),  # articles only as whole words
    ("  Hello,\tWORLD...  ", "hello world"),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert T.normalize_answer(text) == expected


def test_exact_match_by_hand():
    assert T.exact_match("The Cat!", "cat") == 1.0
    assert T.exact_match("a cat", "the cat.") == 1.0
    assert T.exact_match("cats", "cat") == 0.0
    assert T.exact_match("", "the") == 1.0  # both normalize to nothing


def test_token_f1_by_hand():
    # pred words [paris, is, capital], ref [capital, is, paris, france]: 3 shared, P = 1, R = 3/4
    assert T.token_f1("Paris is the capital", "the capital is Paris, France") == pytest.approx(2 * 0.75 / 1.75)
    # multiset overlap: pred [cat, cat, dog], ref [cat, dog, dog] share min counts 1 + 1 = 2: P = R = 2/3
    assert T.token_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
    assert T.token_f1("blue", "red") == 0.0
    assert T.token_f1("", "") == 1.0
    assert T.token_f1("the", "") == 1.0
    assert T.token_f1("x", "") == 0.0
    assert T.token_f1("", "x") == 0.0


def test_answer_recall_by_hand():
    assert T.answer_recall("it is Paris", "Paris, France") == 0.5
    assert T.answer_recall("paris", "Paris paris France") == 0.5  # distinct words: {paris, france}
    assert T.answer_recall("France and Paris", "paris france") == 1.0
    assert T.answer_recall("", "the") == 1.0
    assert T.answer_recall("word", "a") == 0.0


# ---------------------------------------------------------------------------- against the libraries


def _direct_rouge():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    rows = []
    for pred, ref in PAIRS:
        # rougeLsum wants one sentence per line; the split is after ., ! or ? followed by white space
        s = scorer.score("\n".join(T._SENTENCE_END.split(ref.strip())), "\n".join(T._SENTENCE_END.split(pred.strip())))
        rows.append({k: s[k].fmeasure for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")})
    return rows


def test_split_sentences():
    assert T.split_sentences(" One. Two!  Three? four ") == "One.\nTwo!\nThree?\nfour"
    assert T.split_sentences("v1.2 is out") == "v1.2 is out"


def test_rouge_matches_rouge_score():
    direct = _direct_rouge()
    assert [T.rouge_scores(p, r) for p, r in PAIRS] == direct
    scores = M.load_metric("theta_rouge").compute(predictions=PREDS, references=REFS)
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert scores[key] == pytest.approx(sum(row[key] for row in direct) / len(direct), abs=1e-12)
    per = M.load_metric("theta_rouge").compute(predictions=PREDS, references=REFS, use_aggregator=False)
    assert per["rougeL"] == pytest.approx([row["rougeL"] for row in direct], abs=1e-12)
    # the stemmer is on: "running runners ran" vs "runner runs" share stems
    assert direct[2]["rouge1"] > 0.5
    # with the sentences in another order, the summary-level LCS beats the plain LCS: the split is really used
    assert direct[1]["rougeLsum"] > direct[1]["rougeL"]


def test_bleu_and_chrf_match_sacrebleu():
    import sacrebleu
    from sacrebleu.metrics import BLEU, CHRF

    scores = M.load_metric("theta_sacrebleu").compute(predictions=PREDS, references=REFS)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-9)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score, abs=1e-9)
    bleu, chrf = BLEU(), CHRF()
    bleu.corpus_score(PREDS, [REFS]), chrf.corpus_score(PREDS, [REFS])
    assert scores["bleu_signature"] == str(bleu.get_signature())
    assert scores["chrf_signature"] == str(chrf.get_signature())
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    identical = M.load_metric("theta_sacrebleu").compute(predictions=["the cat sat on the mat"],
                                                         references=["the cat sat on the mat"])
    assert identical["bleu"] == pytest.approx(100.0) and identical["chrf"] == pytest.approx(100.0)


def test_qa_module_and_combined_metrics():
    qa = M.load_metric("theta_qa").compute(predictions=PREDS, references=REFS)
    assert qa["exact_match"] == pytest.approx(1 / 6)  # only the last pair
    assert qa["f1"] == pytest.approx(sum(T.token_f1(p, r) for p, r in PAIRS) / 6)
    assert qa["answer_recall"] == pytest.approx(sum(T.answer_recall(p, r) for p, r in PAIRS) / 6)
    per = M.load_metric("theta_qa").compute(predictions=PREDS, references=REFS, per_example=True)
    assert per["exact_match"] == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]

    combined = M.compute_text_metrics(PREDS, REFS)
    assert set(M.TEXT_METRIC_KEYS) | {"bleu_signature", "chrf_signature"} == set(combined)
    assert combined["f1"] == qa["f1"]
    rows = M.per_example_scores(PREDS, REFS)
    direct = _direct_rouge()
    for row, (pred, ref), rouge in zip(rows, PAIRS, direct):
        assert row == {"exact_match": T.exact_match(pred, ref), "f1": T.token_f1(pred, ref),
                       "answer_recall": T.answer_recall(pred, ref), **rouge}
    with pytest.raises(ValueError):
        M.compute_text_metrics(["a"], ["a", "b"])


# ---------------------------------------------------------------------------- offline loading, packaging


def test_evaluate_load_from_local_path_with_the_network_blocked(monkeypatch):
    import evaluate

    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for name in M.METRIC_MODULES:
        module = evaluate.load(str(M.metric_path(name)), keep_in_memory=True)  # the folder
        assert module.name == name
        module = evaluate.load(str(M.metric_path(name) / f"{name}.py"), keep_in_memory=True)  # the script
        assert module.compute(predictions=["a b c"], references=["a b c"])
    assert attempts == []




def test_evaluate_load_in_a_fresh_process_without_offline_flags(tmp_path):
    """A cold module cache, HF_HUB_OFFLINE unset, and every socket connect refused and logged:
    loading the shipped modules must not even try the network (the CLI test covers HF_HUB_OFFLINE=1)."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD)
    log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE",
                                                             "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(guard), THETA_NETWORK_LOG=str(log))
    code = ("import json, socket; from theta_ai.metrics import compute_text_metrics as c; "
            "print(socket.socket.connect.__name__); print(json.dumps(c(['the cat sat'], ['the cat sat down'])))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    guard_name, scores = out.stdout.strip().splitlines()[-2:]
    assert guard_name == "_guarded"  # the guard really was installed
    assert not log.exists(), log.read_text()
    scores = json.loads(scores)
    assert scores["rouge1"] == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert scores["exact_match"] == 0.0
    assert (tmp_path / "hf" / "modules" / "evaluate_modules").is_dir()  # loaded through evaluate's module cache


def test_metric_modules_are_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["theta_ai"]
    package = ROOT / "src" / "theta_ai"
    for name in M.METRIC_MODULES:
        script = M.metric_path(name) / f"{name}.py"
        assert script.is_file()
        relative = script.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), (relative, patterns)
    with pytest.raises(ValueError, match="unknown theta_ai metric"):
        M.metric_path("rouge")


# ---------------------------------------------------------------------------- Trainer compute_metrics


def test_preprocess_logits_shift_and_compute_metrics():
    import numpy as np
    import torch
    from transformers import EvalPrediction

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 0], [-100, 2, 6, -100, -100]])
    predicted, nll = M.preprocess_logits_for_metrics(logits, labels)
    assert predicted.shape == nll.shape == (2, 5)
    assert predicted[:, 0].tolist() == [-100, -100]
    assert predicted[:, 1:].tolist() == logits[:, :-1].argmax(-1).tolist()  # logits at t predict token t + 1

    # the same numbers by hand
    log_probs = torch.log_softmax(logits, dim=-1)
    hits, total_nll, count = 0, 0.0, 0
    for b in range(2):
        for t in range(1, 5):
            if labels[b, t] != -100:
                count += 1
                hits += int(logits[b, t - 1].argmax() == labels[b, t])
                total_nll -= float(log_probs[b, t - 1, labels[b, t]])
    out = M.compute_metrics(EvalPrediction(predictions=(predicted.numpy(), nll.numpy()), label_ids=labels.numpy()))
    assert out["answer_tokens"] == count == 5
    assert out["token_accuracy"] == pytest.approx(hits / count)
    assert out["perplexity"] == pytest.approx(math.exp(total_nll / count), rel=1e-5)

    # a prediction that matches every label gives accuracy 1
    perfect = np.where(labels.numpy() == -100, -100, labels.numpy())
    assert M.compute_metrics(EvalPrediction(predictions=perfect, label_ids=labels.numpy()))["token_accuracy"] == 1.0


def test_compute_metrics_inside_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    from theta_ai.data import Example, ExampleFormatter, PaddingCollator
    from theta_ai.model.load import build_theta_tiny, training_texts

    examples = [Example.from_qa(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.") for a in range(4) for b in range(3)]
    loaded = build_theta_tiny(training_texts(examples))
    formatter = ExampleFormatter(loaded.tokenizer, "qa", 64)
    dataset, _ = formatter.encode_all(examples)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=len(examples), report_to="none",
                             remove_unused_columns=False, use_cpu=True)
    trainer = Trainer(model=loaded.model, args=args, eval_dataset=dataset,
                      data_collator=PaddingCollator(loaded.tokenizer.pad_token_id), compute_metrics=M.compute_metrics,
                      preprocess_logits_for_metrics=M.preprocess_logits_for_metrics)
    metrics = trainer.evaluate()
    # one batch: Trainer's loss is the mean over the same answer tokens, so perplexity = exp(eval_loss)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]), rel=1e-4)
    assert 0.0 <= metrics["eval_token_accuracy"] <= 1.0
    answer_tokens = sum(sum(1 for label in row[1:] if label != -100) for row in dataset["labels"])
    assert metrics["eval_answer_tokens"] == answer_tokens
