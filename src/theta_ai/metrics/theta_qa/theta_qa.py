"""theta_qa: SQuAD exact match and token F1, plus answer recall, as an ``evaluate`` metric module.

Ships inside theta_ai and loads from its local path, with no network::

    import evaluate
    from theta_ai.metrics import metric_path
    qa = evaluate.load(str(metric_path("theta_qa")), keep_in_memory=True)
    qa.compute(predictions=["Paris."], references=["paris"])
    # {'exact_match': 1.0, 'f1': 1.0, 'answer_recall': 1.0}

``per_example=True`` returns lists (one score per pair) instead of means.
The scores are computed by :mod:`theta_ai.metrics.text` (one implementation, also used elsewhere).
"""

import datasets
import evaluate

from theta_ai.metrics.text import QA_KEYS, mean, qa_scores

_DESCRIPTION = """SQuAD-normalized exact match (lower-case, no punctuation, no a/an/the, single spaces), SQuAD
token F1, and answer recall (share of the reference's distinct normalized words found in the prediction).
All three are fractions in [0, 1]; corpus values are means over the examples."""

_KWARGS = """
Args:
    predictions (list of str): generated answers.
    references (list of str): reference answers, one per prediction.
    per_example (bool, default False): return a list of scores per key instead of the mean.
Returns:
    exact_match, f1, answer_recall: floats in [0, 1] (or lists with per_example=True).
"""

_CITATION = """@inproceedings{rajpurkar-etal-2016-squad, title={SQuAD: 100,000+ Questions for Machine
Comprehension of Text}, author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
booktitle={EMNLP}, year={2016}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ThetaQa(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, per_example=False):
        rows = [qa_scores(p, r) for p, r in zip(predictions, references)]
        if per_example:
            return {key: [row[key] for row in rows] for key in QA_KEYS}
        return {key: mean([row[key] for row in rows]) for key in QA_KEYS}
