"""Answer-quality scores as plain functions: the one implementation behind the ``evaluate`` modules.

* :func:`normalize_answer`, :func:`exact_match`, :func:`token_f1`: the SQuAD v1.1 evaluation script
  (lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse white space; F1 over the
  multiset of normalized words; two answers with no words at all match).
* :func:`answer_recall`: the share of the reference's distinct normalized words found in the prediction.
* :func:`rouge_scores`: ROUGE-1/2/L/Lsum F-measures from ``rouge_score`` with ``use_stemmer=True``.
  ``rougeLsum`` needs one sentence per line; :func:`split_sentences` puts a line break after each
  ``.``, ``!`` or ``?`` followed by white space (no NLTK model is needed, so nothing is downloaded).
  Corpus ROUGE is the plain mean of the per-example F-measures (no bootstrap, so it is deterministic).
* :func:`corpus_bleu_chrf`: sacreBLEU corpus BLEU and chrF (0-100) with their signature strings.

Scales: exact match, F1, answer recall and ROUGE are fractions in [0, 1]; BLEU and chrF are sacreBLEU's 0-100.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache
from typing import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
QA_KEYS = ("exact_match", "f1", "answer_recall")
_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower-case, remove punctuation, remove articles, collapse white space.

    >>> normalize_answer("The  Eiffel Tower, in Paris!")
    'eiffel tower in paris'
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_words(text: str) -> list[str]:
    """The normalized words of an answer."""
    return normalize_answer(text).split()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalized texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between the normalized words of ``prediction`` and ``reference``.

    >>> round(token_f1("Paris is the capital", "the capital is Paris, France"), 4)
    0.8571
    """
    pred, ref = answer_words(prediction), answer_words(reference)
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_recall(prediction: str, reference: str) -> float:
    """Share of the reference's distinct normalized words that appear in the prediction.

    A reference with no words after normalization counts as recalled only by a prediction with none either.

    >>> answer_recall("it is Paris", "Paris, France")
    0.5
    """
    ref = set(answer_words(reference))
    pred = set(answer_words(prediction))
    if not ref:
        return float(not pred)
    return len(ref & pred) / len(ref)


def qa_scores(prediction: str, reference: str) -> dict[str, float]:
    return {"exact_match": exact_match(prediction, reference), "f1": token_f1(prediction, reference),
            "answer_recall": answer_recall(prediction, reference)}


def split_sentences(text: str) -> str:
    """One sentence per line (after ``.``, ``!`` or ``?`` followed by white space), as ``rougeLsum`` expects."""
    return "\n".join(part for part in _SENTENCE_END.split(text.strip()) if part)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L/Lsum F-measures of one prediction against one reference (stemmed).

    The texts are passed through :func:`split_sentences`; line breaks matter only to ``rougeLsum``
    (rouge_score's tokenizer treats them as spaces for the other three).
    """
    scores = _rouge_scorer().score(split_sentences(reference), split_sentences(prediction))
    return {key: scores[key].fmeasure for key in ROUGE_TYPES}


def corpus_bleu_chrf(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | str]:
    """sacreBLEU corpus BLEU and chrF (default settings: 13a tokenizer, exponential smoothing; chrF n=6, beta=2)."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    predictions, references = list(predictions), list(references)
    if predictions:
        bleu_score = bleu.corpus_score(predictions, [references]).score
        chrf_score = chrf.corpus_score(predictions, [references]).score
    else:
        bleu_score = chrf_score = 0.0
    return {"bleu": float(bleu_score), "chrf": float(chrf_score),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def mean(values: Sequence[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
