"""Metrics: ``evaluate`` modules shipped inside the package, and ``compute_metrics`` for Trainer.

The text metrics are three ``evaluate`` metric modules in sub-folders of this package, each loaded
from its local path (``evaluate.load(str(path))``), so nothing is looked up on the hub:

* ``theta_qa``: SQuAD exact match, token F1, answer recall (fractions in [0, 1]);
* ``theta_rouge``: ROUGE-1/2/L/Lsum F-measures, stemmed, mean over examples (fractions in [0, 1]);
* ``theta_sacrebleu``: corpus BLEU and chrF (0-100) with sacreBLEU signature strings.

>>> scores = compute_text_metrics(["Paris."], ["Paris"])  # doctest: +SKIP
>>> scores["exact_match"], scores["rougeL"]  # doctest: +SKIP
(1.0, 1.0)

During training, :func:`~theta_ai.metrics.trainer_metrics.compute_metrics` with
:func:`~theta_ai.metrics.trainer_metrics.preprocess_logits_for_metrics` gives token accuracy and perplexity
on answer tokens without keeping full logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from theta_ai.metrics.text import QA_KEYS, ROUGE_TYPES, answer_recall, exact_match, normalize_answer, rouge_scores, token_f1
from theta_ai.metrics.trainer_metrics import compute_metrics, preprocess_logits_for_metrics

if TYPE_CHECKING:  # pragma: no cover
    import evaluate

METRIC_MODULES = ("theta_qa", "theta_rouge", "theta_sacrebleu")
#: The numeric keys :func:`compute_text_metrics` returns, in report order.
TEXT_METRIC_KEYS = (*QA_KEYS, *ROUGE_TYPES, "bleu", "chrf")
#: The keys that have a per-example value (BLEU and chrF are corpus-level only).
PER_EXAMPLE_KEYS = (*QA_KEYS, *ROUGE_TYPES)

_loaded: dict[str, "evaluate.EvaluationModule"] = {}


def metric_path(name: str) -> Path:
    """The folder of a shipped metric module (``evaluate.load`` accepts it as a local path)."""
    if name not in METRIC_MODULES:
        raise ValueError(f"unknown theta_ai metric {name!r}; choose one of {', '.join(METRIC_MODULES)}")
    return Path(__file__).resolve().parent / name


def load_metric(name: str) -> "evaluate.EvaluationModule":
    """``evaluate.load`` of a shipped module from its local folder (cached per process, kept in memory)."""
    if name not in _loaded:
        import evaluate

        _loaded[name] = evaluate.load(str(metric_path(name)), keep_in_memory=True)
    return _loaded[name]


def compute_text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | str]:
    """Corpus scores of every text metric, plus ``bleu_signature`` and ``chrf_signature``."""
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    out: dict[str, float | str] = {}
    for name in METRIC_MODULES:
        out.update(load_metric(name).compute(predictions=predictions, references=references))
    return out


def per_example_scores(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """One dict of :data:`PER_EXAMPLE_KEYS` scores per prediction/reference pair."""
    predictions, references = list(predictions), list(references)
    if not predictions:
        return []
    columns = dict(load_metric("theta_qa").compute(predictions=predictions, references=references, per_example=True))
    columns.update(load_metric("theta_rouge").compute(predictions=predictions, references=references,
                                                      use_aggregator=False))
    return [{key: float(columns[key][i]) for key in PER_EXAMPLE_KEYS} for i in range(len(predictions))]


__all__ = [
    "METRIC_MODULES", "PER_EXAMPLE_KEYS", "TEXT_METRIC_KEYS", "answer_recall", "compute_metrics",
    "compute_text_metrics", "exact_match", "load_metric", "metric_path", "normalize_answer", "per_example_scores",
    "preprocess_logits_for_metrics", "rouge_scores", "token_f1",
]
