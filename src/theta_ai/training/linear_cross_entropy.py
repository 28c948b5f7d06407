"""A fused linear cross-entropy: the LM head's matmul, the softmax cross-entropy and their gradients, one slice
of positions at a time, in plain torch (the algorithm of Liger-Kernel's ``LigerFusedLinearCrossEntropyFunction``).

:func:`linear_cross_entropy` returns ``sum_i CE(hidden_i @ weight.T + bias, target_i)``. Its forward pass makes
each slice's logits in one reused buffer, turns them into the slice's loss and, in place, into the gradient of
the loss with respect to those logits (``softmax - one_hot``), and multiplies that by the weight and the hidden
states there and then: three matmuls per slice, as many as autograd's plain path, and no recomputation. The
backward pass only scales the kept ``d hidden`` and ``d weight`` by the incoming gradient.

What it saves over ``F.cross_entropy(F.linear(hidden, weight).float(), ...)``:

* memory: the plain path keeps the fp32 logits and their log-softmax (``positions x vocabulary`` each) for the
  backward pass and makes a third such tensor there; this one holds one slice's logits (``rows x vocabulary``) and
  the head's weight gradient (``vocabulary x width``), which the plain backward pass makes anyway;
* time, where memory traffic costs: on a CPU each fresh ``positions x vocabulary`` tensor is first touched page by
  page, and the plain path makes five of them (logits, their fp32 copy under autocast, the log-softmax, the
  gradient and its cast back), passing over each several times. Measured side by side in
  ``benchmarks/train_throughput.py`` (benchmarks/README.md).

Under autocast the matmuls run in the autocast dtype, as ``F.linear`` would, and the softmax in fp32, as the
model's own loss does (it upcasts the logits). Targets equal to ``ignore_index`` add no loss and no gradient.
"""
from __future__ import annotations

import torch

IGNORE_INDEX = -100


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype ``F.linear(hidden, weight)`` would compute in here: autocast's, else the inputs' own."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.result_type(hidden, weight)


def _slices(hidden, weight, bias, targets, rows, grads, ignore_index):
    """The summed loss and, when ``grads`` (a tuple of three booleans: hidden, weight, bias), the gradients of it."""
    compute = _compute_dtype(hidden, weight)
    with torch.autocast(hidden.device.type, enabled=False):  # every dtype below is chosen by hand
        return _slices_in(hidden, weight, bias, targets, rows, grads, ignore_index, compute)


def _slices_in(hidden, weight, bias, targets, rows, grads, ignore_index, compute):
    want_hidden, want_weight, want_bias = grads
    x_all = hidden.to(compute)
    w = weight.to(compute)
    n, vocab = hidden.shape[0], weight.shape[0]
    rows = max(1, min(rows or n, n))
    logits_buf = torch.empty(rows, vocab, dtype=compute, device=hidden.device)
    z_buf = logits_buf if compute == torch.float32 else torch.empty(rows, vocab, dtype=torch.float32,
                                                                    device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if want_hidden else None
    grad_weight = None  # the first slice's product, then accumulated into (no zero-filled vocabulary x width buffer)
    grad_bias = torch.zeros(vocab, dtype=torch.float32, device=hidden.device) if want_bias else None
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, n, rows):
        x = x_all[start:start + rows]
        t = targets[start:start + rows]
        k = x.shape[0]
        logits = torch.mm(x, w.t(), out=logits_buf[:k])
        z = logits if z_buf is logits_buf else z_buf[:k].copy_(logits)
        if bias is not None:
            z += bias.float()
        valid = t != ignore_index
        safe = t.clamp(min=0)[:, None]
        target_logit = z.gather(1, safe).squeeze(1)
        peak = z.amax(1, keepdim=True)
        z.sub_(peak).exp_()  # z = exp(logit - max)
        norm = z.sum(1, keepdim=True)
        total += torch.where(valid, peak.squeeze(1) + norm.log().squeeze(1) - target_logit, 0.0).sum()
        if grads == (False, False, False):
            continue
        # d loss / d logits = softmax - one_hot on the valid rows, 0 on the ignored ones: one pass over the slice
        z.mul_(valid[:, None] / norm)
        z.scatter_add_(1, safe, -valid[:, None].to(z.dtype))
        g = z if compute == torch.float32 else logits.copy_(z)
        if want_hidden:
            grad_hidden[start:start + k] = torch.mm(g, w)
        if want_weight:
            if grad_weight is None:
                grad_weight = torch.mm(g.t(), x).to(torch.float32)
            elif compute == torch.float32:
                grad_weight.addmm_(g.t(), x)
            else:
                grad_weight += torch.mm(g.t(), x)
        if want_bias:
            grad_bias += z.sum(0)
    if want_weight and grad_weight is None:  # no positions at all
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
    return total, grad_hidden, grad_weight, grad_bias


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows, ignore_index):
        grads = (hidden.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
        total, grad_hidden, grad_weight, grad_bias = _slices(hidden, weight, bias, targets, rows, grads,
                                                             ignore_index)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        if grad_hidden is not None:
            grad_hidden = grad_hidden.mul_(grad_output.to(grad_hidden.dtype))
        if grad_weight is not None:
            grad_weight = grad_weight.mul_(grad_output).to(weight_dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.mul_(grad_output).to(bias_dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, rows: int | None = None,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``F.cross_entropy(F.linear(hidden, weight, bias).float(), targets, reduction="sum")`` computed ``rows``
    positions at a time (None: all at once) with its gradients made in the forward pass (see the module).

    ``hidden``: ``positions x width``; ``weight``: ``vocabulary x width``; ``targets``: ``positions``. Without
    grad mode or anything that needs a gradient it computes the loss only.
    """
    needs = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                         or (bias is not None and bias.requires_grad))
    if not needs:
        with torch.no_grad():
            return _slices(hidden, weight, bias, targets, rows, (False, False, False), ignore_index)[0]
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, rows, ignore_index)
