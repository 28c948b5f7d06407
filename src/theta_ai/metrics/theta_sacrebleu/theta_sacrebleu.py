"""theta_sacrebleu: corpus BLEU and chrF from sacreBLEU, with their signatures, as an ``evaluate`` metric module.

Ships inside theta_ai and loads from its local path, with no network::

    import evaluate
    from theta_ai.metrics import metric_path
    sb = evaluate.load(str(metric_path("theta_sacrebleu")), keep_in_memory=True)
    sb.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
    # {'bleu': 100.0, 'chrf': 100.0, 'bleu_signature': 'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:...', ...}

One reference per prediction; sacreBLEU's default settings (BLEU: 13a tokenizer, exponential smoothing;
chrF: character 6-grams, beta 2). Scores are on sacreBLEU's 0-100 scale.
"""

import datasets
import evaluate

from theta_ai.metrics.text import corpus_bleu_chrf

_DESCRIPTION = """Corpus-level BLEU and chrF computed by sacreBLEU with default settings, returned together with
the signature strings that make the numbers reproducible."""

_KWARGS = """
Args:
    predictions (list of str): generated answers.
    references (list of str): one reference answer per prediction.
Returns:
    bleu, chrf: floats in [0, 100]; bleu_signature, chrf_signature: sacreBLEU signature strings.
"""

_CITATION = """@inproceedings{post-2018-call, title={A Call for Clarity in Reporting {BLEU} Scores},
author={Post, Matt}, booktitle={Proceedings of the Third Conference on Machine Translation}, year={2018}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ThetaSacrebleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references):
        return corpus_bleu_chrf(predictions, references)
