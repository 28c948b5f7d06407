"""theta_rouge: ROUGE-1/2/L/Lsum F-measures (rouge_score, Porter stemmer) as an ``evaluate`` metric module.

Unlike the hub's ``rouge`` metric, this one ships inside theta_ai (no download) and aggregates by a
plain mean of the per-example F-measures instead of bootstrap resampling, so the numbers are
deterministic. Texts are split into one sentence per line before scoring, which only ``rougeLsum`` uses::

    import evaluate
    from theta_ai.metrics import metric_path
    rouge = evaluate.load(str(metric_path("theta_rouge")), keep_in_memory=True)
    rouge.compute(predictions=["the cat sat"], references=["the cat sat down"])

``use_aggregator=False`` returns one score per pair (lists).
"""

import datasets
import evaluate

from theta_ai.metrics.text import ROUGE_TYPES, mean, rouge_scores

_DESCRIPTION = """ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures from Google's rouge_score package with
use_stemmer=True. The corpus value of each is the arithmetic mean of the per-example F-measures."""

_KWARGS = """
Args:
    predictions (list of str): generated answers.
    references (list of str): reference answers, one per prediction.
    use_aggregator (bool, default True): False returns per-example lists instead of means.
Returns:
    rouge1, rouge2, rougeL, rougeLsum: floats in [0, 1] (or lists).
"""

_CITATION = """@inproceedings{lin-2004-rouge, title={ROUGE: A Package for Automatic Evaluation of Summaries},
author={Lin, Chin-Yew}, booktitle={Text Summarization Branches Out}, year={2004}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ThetaRouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, use_aggregator=True):
        rows = [rouge_scores(p, r) for p, r in zip(predictions, references)]
        if not use_aggregator:
            return {key: [row[key] for row in rows] for key in ROUGE_TYPES}
        return {key: mean([row[key] for row in rows]) for key in ROUGE_TYPES}
