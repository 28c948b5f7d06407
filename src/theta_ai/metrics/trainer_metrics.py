"""``compute_metrics`` for ``transformers.Trainer``: token accuracy and perplexity on answer tokens.

Pass both functions to the Trainer::

    Trainer(..., compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess_logits_for_metrics)

:func:`preprocess_logits_for_metrics` runs on each evaluation batch and reduces the ``[batch, seq, vocab]``
logits to two ``[batch, seq]`` tensors, so evaluation never accumulates full logits:

* the greedy prediction for each position, **already shifted**: logits at position ``t`` predict
  token ``t + 1``, so column ``t + 1`` of the result holds ``argmax(logits[:, t])`` and column 0 holds -100;
* the negative log-likelihood of the label at each position (same shift; 0 where there is no label).

:func:`compute_metrics` then compares predictions with labels position by position wherever the label
is not -100 (the answer tokens, since theta-train masks prompts by position) and returns
``token_accuracy`` and ``perplexity`` = exp(total NLL / answer tokens), token-weighted over the whole
evaluation set (Trainer's ``eval_loss`` is a mean of per-batch means, so exp(eval_loss) can differ slightly).
Trainer prefixes the keys with ``eval_``.
"""

from __future__ import annotations

import math

IGNORE_INDEX = -100


def preprocess_logits_for_metrics(logits, labels):
    """``(predicted_ids, token_nll)``, both ``[batch, seq]`` and aligned with ``labels`` (see module docstring)."""
    import torch
    import torch.nn.functional as F

    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    batch, seq = logits.shape[:2]
    predicted = torch.full((batch, seq), IGNORE_INDEX, dtype=torch.long, device=logits.device)
    predicted[:, 1:] = logits[:, :-1].argmax(dim=-1)
    nll = torch.zeros((batch, seq), dtype=torch.float32, device=logits.device)
    if labels is not None and seq > 1:
        target = labels[:, 1:]
        nll[:, 1:] = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                     ignore_index=IGNORE_INDEX, reduction="none").view(batch, seq - 1)
    return predicted, nll


def compute_metrics(eval_pred) -> dict[str, float]:
    """``{"token_accuracy", "perplexity", "answer_tokens"}`` from the output of :func:`preprocess_logits_for_metrics`."""
    import numpy as np

    predictions = eval_pred.predictions
    labels = np.asarray(eval_pred.label_ids)
    if isinstance(predictions, (tuple, list)):
        predicted, nll = np.asarray(predictions[0]), np.asarray(predictions[1])
    else:
        predicted, nll = np.asarray(predictions), None
    mask = labels != IGNORE_INDEX
    mask[:, 0] = False  # nothing predicts the first token
    count = int(mask.sum())
    if count == 0:
        return {"token_accuracy": 0.0, "perplexity": float("nan"), "answer_tokens": 0}
    out = {"token_accuracy": float((predicted[mask] == labels[mask]).mean()), "answer_tokens": count}
    if nll is not None:
        mean_nll = float(nll[mask].astype(np.float64).sum() / count)
        out["perplexity"] = math.exp(mean_nll) if mean_nll < 700 else float("inf")
    return out
