"""Batching: right padding to the longest row of the batch, or padding-free packing.

Length grouping is Trainer's own ``train_sampling_strategy="group_by_length"``, fed by the
``length`` column that :meth:`ExampleFormatter.encode_all` writes; nothing is re-implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from theta_ai.data.tokenize import IGNORE_INDEX
from theta_ai.errors import PackingUnsupportedError  # noqa: F401 (defined in errors.py)


@dataclass
class PaddingCollator:
    """Pads ``input_ids`` with ``pad_token_id``, ``labels`` with -100, and builds the attention mask.

    Rows are padded on the right to the longest row in the batch (or up to a multiple of
    ``pad_to_multiple_of``), never to a fixed length.

    >>> collate = PaddingCollator(pad_token_id=0)
    >>> batch = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist(), batch["labels"].tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]], [[-100, 6, 7], [8, -100, -100]])
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.as_tensor(feature["labels"], dtype=torch.long)
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


#: Keys :class:`MarkedCollator` adds to a batch, read (and removed) by ``ThetaTrainer.compute_loss``: computed on
#: the CPU while the batch is built, so the training step copies nothing back from the device for them.
ANSWER_START = "theta_answer_start"  # first column whose next label is trained in some row: the LM head starts here
REAL_TOKENS = "theta_real_tokens"  # tokens that are not padding (the tokens/s of the throughput panel)
ANSWER_POSITIONS = "theta_answer_positions"  # flat positions (row x width + column) whose next label is trained
ANSWER_TARGETS = "theta_answer_targets"  # the labels those positions predict
MARK_KEYS = (ANSWER_START, REAL_TOKENS, ANSWER_POSITIONS, ANSWER_TARGETS)


def answer_positions(labels) -> tuple[Any, Any]:
    """``(positions, targets)`` of a ``batch x time`` label tensor: the flat indices ``row * time + t`` of the
    positions whose next label is trained, and those labels (what the answer-token LM head computes).

    >>> import torch
    >>> positions, targets = answer_positions(torch.tensor([[-100, -100, 5, 6], [-100, -100, -100, 7]]))
    >>> positions.tolist(), targets.tolist()
    ([1, 2, 6], [5, 6, 7])
    """
    following = labels[:, 1:]
    rows, columns = (following != IGNORE_INDEX).nonzero(as_tuple=True)
    return rows * labels.shape[1] + columns, following[rows, columns]


def mark_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` plus :data:`ANSWER_START` and :data:`REAL_TOKENS` (plain ints) and :data:`ANSWER_POSITIONS` /
    :data:`ANSWER_TARGETS` (:func:`answer_positions`), from its CPU tensors.

    >>> import torch
    >>> mark_batch({"labels": torch.tensor([[-100, -100, 5, 6], [-100, -100, -100, 7]]),
    ...             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])})[ANSWER_START]
    1
    """
    labels = batch["labels"]
    targets = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero()
    start = int(targets[0]) if len(targets) else labels.shape[1] - 1
    mask = batch.get("attention_mask")
    tokens = int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())  # packed rows have no padding
    positions, answer_targets = answer_positions(labels)
    return {**batch, ANSWER_START: start, REAL_TOKENS: tokens, ANSWER_POSITIONS: positions,
            ANSWER_TARGETS: answer_targets}


@dataclass
class MarkedCollator:
    """Wraps a collator and :func:`mark_batch`-es what it returns (the training collator of ThetaTrainer)."""

    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return mark_batch(self.collate(features))


def packing_collator():
    """Padding-free packing: transformers' ``DataCollatorWithFlattening`` (one row, restarting position ids).

    Use only after :func:`check_packing_isolation` passed for the model.
    """
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)


def check_packing_isolation(model, atol: float = 1e-4) -> None:
    """Prove on the real model that two packed examples do not see each other, or raise.

    Runs the model on two short sequences separately and packed into one row with restarting
    ``position_ids`` (what :func:`packing_collator` produces) and compares the logits. Models whose
    attention ignores ``position_ids`` boundaries would mix the examples; for those packing is refused.
    """
    import torch

    vocab = model.config.vocab_size
    a = torch.arange(3, 9).unsqueeze(0) % vocab
    b = torch.arange(11, 16).unsqueeze(0) % vocab
    packed = torch.cat([a, b], dim=1)
    position_ids = torch.cat([torch.arange(a.shape[1]), torch.arange(b.shape[1])]).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            separate = torch.cat([model(input_ids=x.to(device)).logits for x in (a, b)], dim=1).float()
            together = model(input_ids=packed.to(device), position_ids=position_ids.to(device),
                             use_cache=False).logits.float()
    except Exception as exc:  # the forward does not accept packed inputs at all
        raise PackingUnsupportedError(f"--packing: this model cannot run packed rows ({exc}); "
                                      "train without --packing") from None
    finally:
        model.train(was_training)
    if not torch.allclose(separate, together, atol=atol, rtol=1e-3):
        raise PackingUnsupportedError(
            f"--packing: {type(model).__name__} with attention '{model.config._attn_implementation}' lets packed "
            "examples attend to each other; train without --packing (length grouping already avoids most padding)")
