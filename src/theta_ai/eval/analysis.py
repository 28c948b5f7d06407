"""Error analysis of generated answers: one category per example, tables, example picks, lengths.

Categories, in order of precedence (the first rule that matches wins):

=============  ==========================================================================================
``empty``       the prediction is blank after clean-up (nothing to score)
``correct``     exact match after SQuAD normalization
``repetition``  a repetition loop: the text has at least 8 words and one n-gram (n = 1..5) occurring at
                least 3 times covers at least half of the words (texts of fewer than 8 words but at least
                24 characters are checked the same way on characters, n = 1..8, to catch ``!!!!!!``)
``echo``        the prediction mostly repeats the question: token F1 with the question >= 0.6 and higher
                than its token F1 with the reference (an answer that restates the question the way the
                reference does is not an echo)
``truncated``   generation reached ``--max-new-tokens`` without a stop token (the answer may be cut)
``close``       ROUGE-L >= 0.5
``partial``     token F1 >= 0.2 or ROUGE-L >= 0.2
``wrong``       everything else
=============  ==========================================================================================

Mechanical failures (repetition, echo, truncation) come before the overlap grades because they say
what to fix (decoding, data, ``--max-new-tokens``) even when the text overlaps the reference.
``partial`` needs F1 >= 0.2 rather than F1 > 0 so that a single shared common word ("is") in an otherwise
unrelated answer of several words does not count as partly right. The thresholds are the module constants below.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Sequence

from theta_ai.metrics.text import mean, token_f1

CLOSE_ROUGE_L = 0.5
PARTIAL_F1 = 0.2
PARTIAL_ROUGE_L = 0.2
ECHO_F1 = 0.6
REPEAT_MIN_WORDS = 8
REPEAT_MAX_N = 5
REPEAT_MIN_COUNT = 3
REPEAT_COVERAGE = 0.5
REPEAT_MIN_CHARS = 24
REPEAT_MAX_CHAR_N = 8

PRECEDENCE = ("empty", "correct", "repetition", "echo", "truncated", "close", "partial", "wrong")
CATEGORY_HELP = {
    "empty": "blank prediction",
    "correct": "exact match after normalization",
    "repetition": f"one n-gram repeated >= {REPEAT_MIN_COUNT} times covers >= {REPEAT_COVERAGE:.0%} of the output",
    "echo": f"mostly repeats the question (F1 with question >= {ECHO_F1} and above F1 with reference)",
    "truncated": "hit --max-new-tokens without a stop token",
    "close": f"ROUGE-L >= {CLOSE_ROUGE_L}",
    "partial": f"F1 >= {PARTIAL_F1} or ROUGE-L >= {PARTIAL_ROUGE_L}",
    "wrong": "none of the above",
}
TABLE_SCORES = ("exact_match", "f1", "rougeL", "answer_recall")


def _loop_coverage(units: Sequence[str], max_n: int) -> bool:
    total = len(units)
    for n in range(1, max_n + 1):
        if n * REPEAT_MIN_COUNT > total:
            break
        grams = Counter(tuple(units[i: i + n]) for i in range(total - n + 1))
        gram, count = grams.most_common(1)[0]
        if count < REPEAT_MIN_COUNT:
            continue
        covered = set()
        for i in range(total - n + 1):
            if tuple(units[i: i + n]) == gram:
                covered.update(range(i, i + n))
        if len(covered) >= REPEAT_COVERAGE * total:
            return True
    return False


def is_repetition_loop(text: str) -> bool:
    """True when a repeated n-gram dominates ``text`` (the rule in the module docstring).

    >>> is_repetition_loop("the cat sat the cat sat the cat sat the cat")
    True
    >>> is_repetition_loop("TCP is a reliable, connection-oriented transport protocol used on the internet.")
    False
    """
    words = text.lower().split()
    if len(words) >= REPEAT_MIN_WORDS:
        return _loop_coverage(words, REPEAT_MAX_N)
    chars = [c for c in text.lower() if not c.isspace()]
    if len(chars) >= REPEAT_MIN_CHARS:
        return _loop_coverage(chars, REPEAT_MAX_CHAR_N)
    return False


def echoes_question(prediction: str, question: str, reference: str) -> bool:
    """True when ``prediction`` is closer to the question than to the reference and F1 with the question >= 0.6."""
    with_question = token_f1(prediction, question)
    return with_question >= ECHO_F1 and with_question > token_f1(prediction, reference)


def categorize(prediction: str, reference: str, question: str, scores: dict[str, float],
               truncated: bool = False) -> str:
    """The error category of one example (see the precedence table in the module docstring).

    ``scores`` needs ``exact_match``, ``f1`` and ``rougeL``; ``truncated`` is whether generation hit the
    token limit without a stop token.
    """
    if not prediction.strip():
        return "empty"
    if scores["exact_match"] >= 1.0:
        return "correct"
    if is_repetition_loop(prediction):
        return "repetition"
    if echoes_question(prediction, question, reference):
        return "echo"
    if truncated:
        return "truncated"
    if scores["rougeL"] >= CLOSE_ROUGE_L:
        return "close"
    if scores["f1"] >= PARTIAL_F1 or scores["rougeL"] >= PARTIAL_ROUGE_L:
        return "partial"
    return "wrong"


# ---------------------------------------------------------------------------- tables over prediction rows
# A row is one line of predictions.jsonl: question, reference, prediction, domain, category, the
# per-example scores, pred_words and ref_words.


def _score_means(rows: Sequence[dict]) -> dict[str, float]:
    out = {key: mean([r[key] for r in rows]) for key in TABLE_SCORES}
    out["pred_words"] = mean([r["pred_words"] for r in rows])
    out["ref_words"] = mean([r["ref_words"] for r in rows])
    return out


def category_table(rows: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Per category (in precedence order, all listed): count, share and mean scores and lengths."""
    total = len(rows) or 1
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_cat[row["category"]].append(row)
    table = {}
    for cat in PRECEDENCE:
        members = by_cat.get(cat, [])
        table[cat] = {"count": len(members), "share": len(members) / total,
                      **(_score_means(members) if members else {})}
    return table


def domain_categories(rows: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Category counts per domain."""
    out: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        out[row["domain"]][row["category"]] += 1
    return {domain: {cat: counts.get(cat, 0) for cat in PRECEDENCE} for domain, counts in sorted(out.items())}


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def length_stats(rows: Sequence[dict]) -> dict[str, Any]:
    """Word lengths of predictions vs references: mean, median, p90, ratio, and how many are much shorter/longer."""
    pred = [r["pred_words"] for r in rows]
    ref = [r["ref_words"] for r in rows]
    out: dict[str, Any] = {}
    for name, values in (("prediction", pred), ("reference", ref)):
        out[name] = {"mean": mean(values), "median": _quantile(values, 0.5), "p90": _quantile(values, 0.9),
                     "max": max(values) if values else 0}
    out["mean_ratio"] = (mean(pred) / mean(ref)) if mean(ref) else 0.0
    out["much_shorter"] = sum(1 for p, r in zip(pred, ref) if p < 0.5 * r)
    out["much_longer"] = sum(1 for p, r in zip(pred, ref) if p > 2 * r)
    out["generated_tokens_mean"] = mean([r.get("new_tokens", 0) for r in rows])
    return out


def _rank(rows: Sequence[dict]) -> list[dict]:
    """Rows from best to worst: ROUGE-L, then F1, then original index (stable and deterministic)."""
    return sorted(rows, key=lambda r: (-r["rougeL"], -r["f1"], r["index"]))


def worst_examples(rows: Sequence[dict], n: int) -> list[dict]:
    """The ``n`` rows with the lowest ROUGE-L (ties: lower F1 first, then earlier index)."""
    return sorted(rows, key=lambda r: (r["rougeL"], r["f1"], r["index"]))[:n]


def example_responses(rows: Sequence[dict], n: int) -> dict[str, list[dict]]:
    """``n`` best, ``n`` around the median and ``n`` worst rows by ROUGE-L (the worst as :func:`worst_examples`)."""
    ranked = _rank(rows)
    if not ranked or n < 1:
        return {"best": [], "median": [], "worst": []}
    start = max(0, min(len(ranked) - n, len(ranked) // 2 - n // 2))
    return {"best": ranked[:n], "median": ranked[start: start + n], "worst": worst_examples(rows, n)}
