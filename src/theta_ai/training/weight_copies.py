"""Mixed precision without keeping autocast's half-precision weight copies from the forward to the backward pass.

Under autocast (bf16 on a CPU; fp16 or bf16 on a GPU) each matmul weight is cast to half precision for the forward
pass, and the matmul keeps that copy for the backward pass, where it needs it for its input's gradient: 2 bytes per
parameter held from the forward pass to the backward, on top of the fp32 weights (250 MB for GPT-2 124M; 1 GB for
a 0.5B model, a twelfth of a 12 GB card). Inside :func:`recast_weight_copies` a saved half-precision tensor that
is autocast's copy of an fp32 parameter (or a view of one) is saved as a reference to the parameter instead and
cast again when the backward pass needs it: the same bits (the cast is deterministic; the gradients are bitwise
equal, tested), for one more cast per weight per micro-batch.

A parameter changed in place between the forward and the backward pass (nothing in a Trainer step does that)
raises instead of giving a wrong gradient. Frozen weights (a LoRA run's base) have no cast in the autograd graph
and are kept as autocast keeps them. The recast copy carries no graph, so a double backward
(``create_graph=True``, which theta-train never asks for) would not see the weights through it.
"""

from __future__ import annotations

import contextlib

import torch

HALF = (torch.bfloat16, torch.float16)


class WeightRef:
    """What is saved in place of a weight copy: the parameter, the dtype, and the view the matmul saved."""

    __slots__ = ("param", "dtype", "version", "view")

    def __init__(self, param: torch.Tensor, dtype: torch.dtype, view: tuple | None):
        self.param, self.dtype, self.version, self.view = param, dtype, param._version, view


def cast_source(tensor: torch.Tensor) -> torch.Tensor | None:
    """The fp32 parameter ``tensor`` is autocast's half-precision copy of (or a view of that copy), else None."""
    if tensor.dtype not in HALF or not tensor.requires_grad:
        return None
    base = tensor._base if tensor._base is not None else tensor
    node = base.grad_fn
    if node is None or node.name() != "ToCopyBackward0":
        return None
    param = getattr(node.next_functions[0][0], "variable", None)  # AccumulateGrad: the leaf parameter
    if (param is None or param.dtype != torch.float32 or param.shape != base.shape or param.device != base.device
            or not (param.is_contiguous() and base.is_contiguous())):
        return None
    return param


def _pack(tensor: torch.Tensor):
    param = cast_source(tensor)
    if param is None:
        return tensor
    view = None if tensor._base is None else (tensor.size(), tensor.stride(), tensor.storage_offset())
    return WeightRef(param, tensor.dtype, view)


def _unpack(saved):
    if not isinstance(saved, WeightRef):
        return saved
    if saved.param._version != saved.version:
        raise RuntimeError("a weight was changed in place between the forward and the backward pass, so its "
                           "half-precision copy cannot be cast again; change it outside the training step")
    copy = saved.param.detach().to(saved.dtype)
    return copy if saved.view is None else copy.as_strided(*saved.view)


def recast_weight_copies() -> contextlib.AbstractContextManager:
    """Within this context (a training step's forward pass), autocast's weight copies are not kept for the backward
    pass but cast again there (see the module)."""
    return torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
