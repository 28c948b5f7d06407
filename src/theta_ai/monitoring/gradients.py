"""Layer groups from parameter names; per-group gradient norms and histograms."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any


logger = logging.getLogger("theta_ai")

from theta_ai.monitoring.base import _WriterCallback

# ---------------------------------------------------------------------------- layer groups

EMBEDDINGS, HEAD, OTHER = "embeddings", "head", "other"
_BLOCK = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks|block)\.(\d+)(?:\.|$)")
_EMBEDDING = re.compile(r"(?:^|\.)(?:wte|wpe|embed_tokens|embed_positions|word_embeddings|position_embeddings|"
                        r"token_type_embeddings|embeddings)(?:\.|$)")
_HEAD = re.compile(r"(?:^|\.)(?:ln_f|norm|final_layernorm|final_layer_norm|final_norm|lm_head)(?:\.|$)")


def layer_group(name: str) -> str:
    """The group of a parameter name: ``embeddings``, ``block_N``, ``head`` or ``other``.

    >>> [layer_group(n) for n in ("transformer.wpe.weight", "transformer.h.1.attn.c_attn.weight",
    ...                           "model.norm.weight", "lm_head.weight", "score.weight")]
    ['embeddings', 'block_1', 'head', 'head', 'other']
    """
    block = _BLOCK.search(name)
    if block:
        return f"block_{int(block.group(1))}"
    if _EMBEDDING.search(name):
        return EMBEDDINGS
    if _HEAD.search(name):
        return HEAD
    return OTHER


def _group_order(group: str) -> tuple[int, int]:
    if group == EMBEDDINGS:
        return (0, 0)
    if group.startswith("block_"):
        return (1, int(group[len("block_"):]))
    return (2, 0) if group == HEAD else (3, 0)


def parameter_groups(model, trainable_only: bool = True) -> dict[str, list]:
    """``{group: [parameter, ...]}`` in model order: embeddings, block_0, block_1, ..., head, other.

    ``named_parameters`` lists a tied ``lm_head`` once, under the embeddings, so a tied head group
    holds only the final norm.
    """
    groups: dict[str, list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad or not trainable_only:
            groups.setdefault(layer_group(name), []).append(param)
    return {g: groups[g] for g in sorted(groups, key=_group_order)}


def _is_sharded(tensor) -> bool:
    return type(tensor).__name__ == "DTensor"


def group_grad_norms(groups: Mapping[str, list]) -> dict[str, float]:
    """L2 norm of each group's gradients (groups without gradients are left out), with one host sync."""
    import torch

    names, norms = [], []
    for group, params in groups.items():
        grads = [p.grad.detach() for p in params if p.grad is not None and not _is_sharded(p.grad)]
        if not grads:
            continue
        per_param = [torch.linalg.vector_norm(g, 2, dtype=torch.float32) for g in grads]
        device = per_param[0].device
        norms.append(torch.linalg.vector_norm(torch.stack([n.to(device) for n in per_param])))
        names.append(group)
    if not norms:
        return {}
    device = norms[0].device
    return dict(zip(names, torch.stack([n.to(device) for n in norms]).tolist()))


def _flat_cpu(tensors) -> Any:
    import torch

    return torch.cat([t.detach().float().flatten().cpu() for t in tensors])


# ---------------------------------------------------------------------------- gradients


class GradientMonitorCallback(_WriterCallback):
    """Per-layer-group gradient norms every ``grad_log_steps`` optimizer steps (0 = off), and
    gradient/weight histograms per group every ``histogram_steps`` (0 = off).

    Runs in ``on_pre_optimizer_step``: gradients are unscaled and clipped there (see the module
    docstring). Steps are numbered like Trainer's logs: the ``k``-th optimizer step is logged at ``k``,
    next to ``train/grad_norm`` of the same step. Histograms copy the group's tensors to the CPU, so
    keep ``histogram_steps`` large for big models. Only trainable parameters are included.
    """

    def __init__(self, writer, grad_log_steps: int = 50, histogram_steps: int = 0):
        super().__init__(writer)
        self.grad_log_steps = max(0, int(grad_log_steps or 0))
        self.histogram_steps = max(0, int(histogram_steps or 0))
        self._skip_reason: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        sharded = [name for name in ("fsdp", "deepspeed") if getattr(args, name, None)]
        self._skip_reason = f"{sharded[0]} shards the gradients across processes" if sharded else None
        if self._skip_reason and self._active(state) and (self.grad_log_steps or self.histogram_steps):
            logger.info("per-layer gradient norms and histograms are off: %s", self._skip_reason)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self._active(state) or model is None or self._skip_reason:
            return
        step = state.global_step + 1  # global_step counts finished optimizer steps; this one is about to run
        norms_due = self.grad_log_steps and step % self.grad_log_steps == 0
        histograms_due = self.histogram_steps and step % self.histogram_steps == 0
        if not (norms_due or histograms_due):
            return
        groups = parameter_groups(model)
        if norms_due:
            norms = group_grad_norms(groups)
            for group, value in norms.items():
                self.writer.add_scalar(f"grad_norm/{group}", value, step)
            if norms:
                self.writer.add_scalar("grad_norm/total", math.sqrt(sum(v * v for v in norms.values())), step)
        if histograms_due:
            for group, params in groups.items():
                weights = [p for p in params if not _is_sharded(p)]
                grads = [p.grad for p in params if p.grad is not None and not _is_sharded(p.grad)]
                if weights:
                    self.writer.add_histogram(f"weights/{group}", _flat_cpu(weights), step)
                if grads:
                    self.writer.add_histogram(f"gradients/{group}", _flat_cpu(grads), step)


