"""The fused linear cross-entropy (training/linear_cross_entropy.py): the plain ``F.linear`` + ``F.cross_entropy``
loss and gradients, in slices, with no logits kept for the backward pass and the head's matmuls run once."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from theta_ai.training import linear_cross_entropy as lce
from theta_ai.training.loss import answer_cross_entropy

VOCAB, WIDTH, N = 3000, 16, 68


def _inputs(bias: bool = False, frozen: bool = False):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(N, WIDTH, generator=generator).requires_grad_()
    weight = (torch.randn(VOCAB, WIDTH, generator=generator) * 0.3).requires_grad_(not frozen)
    b = (torch.randn(VOCAB, generator=generator) * 0.1).requires_grad_() if bias else None
    targets = torch.randint(0, VOCAB, (N,), generator=generator)
    targets[[3, 30, 31]] = -100  # ignored positions: no loss, no gradient
    return hidden, weight, b, targets


def _grads(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None and t.requires_grad])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [None, 16, 65, 100])
def test_fp32_loss_and_gradients_equal_the_plain_path(rows, bias):
    hidden, weight, b, targets = _inputs(bias)
    plain = F.cross_entropy(F.linear(hidden, weight, b).float(), targets, reduction="sum") / 65
    fused = lce.linear_cross_entropy(hidden, weight, b, targets, rows) / 65
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=0)
    fused_grads = _grads(fused, (hidden, weight, b))
    assert len(fused_grads) == (3 if bias else 2)
    for got, want in zip(fused_grads, _grads(plain, (hidden, weight, b))):
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    grad_hidden = fused_grads[0]  # the ignored positions got no gradient at all
    assert grad_hidden[[3, 30, 31]].abs().max() == 0 and grad_hidden[0].abs().max() > 0


def test_under_bf16_autocast_it_is_as_close_to_fp32_as_the_plain_path():
    hidden, weight, _, targets = _inputs()
    exact = F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")
    exact_grads = _grads(exact, (hidden, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")
        fused = lce.linear_cross_entropy(hidden, weight, None, targets, 16)
    assert fused.dtype == torch.float32
    assert abs(fused.item() - exact.item()) <= 2 * abs(plain.item() - exact.item()) + 1e-3 * abs(exact.item())
    for got, want, ref in zip(_grads(fused, (hidden, weight)), _grads(plain, (hidden, weight)), exact_grads):
        assert got.dtype == torch.float32
        assert (got - ref).abs().max() <= 2 * (want - ref).abs().max()


def _matmuls(run):
    """The aten matmuls ``run()`` makes, each as (name, first input's shape)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        run()
    return [(e.name, tuple(e.input_shapes[0] if e.name == "aten::mm" else e.input_shapes[1]))
            for e in prof.events() if e.name in ("aten::mm", "aten::addmm_")]


def test_the_forward_pass_keeps_the_gradients_not_the_logits_and_runs_three_matmuls_per_slice():
    hidden, weight, _, targets = _inputs()
    saved, losses = [], []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        forward = _matmuls(lambda: losses.append(lce.linear_cross_entropy(hidden, weight, None, targets, rows=20)))
    assert sorted(saved) == [N * WIDTH * 4, VOCAB * WIDTH * 4]  # d hidden and d weight, no logits
    # per slice of k rows: logits (k x width) @ W.T, d hidden (k x vocabulary) @ W, d weight += (vocabulary x k) @ x;
    # the first slice's d weight is its own product (no zero-filled vocabulary x width buffer to add it to)
    assert forward == [m for i, k in enumerate((20, 20, 20, 8))
                       for m in (("aten::mm", (k, WIDTH)), ("aten::mm", (k, VOCAB)),
                                 ("aten::addmm_" if i else "aten::mm", (VOCAB, k)))]
    assert _matmuls(lambda: losses[0].backward()) == []  # the backward pass only scales them
    assert weight.grad.shape == weight.shape and hidden.grad.shape == hidden.shape


def test_a_frozen_head_gets_no_gradient_and_keeps_none():
    hidden, weight, _, targets = _inputs(frozen=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        loss = lce.linear_cross_entropy(hidden, weight, None, targets, rows=16)
    assert saved == [N * WIDTH * 4]
    loss.backward()
    assert weight.grad is None and hidden.grad is not None


def test_without_grad_mode_it_computes_the_loss_only():
    hidden, weight, _, targets = _inputs()
    with torch.no_grad():
        loss = lce.linear_cross_entropy(hidden, weight, None, targets, rows=16)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, F.cross_entropy(F.linear(hidden, weight), targets, reduction="sum"),
                               rtol=1e-6, atol=0)


def test_the_answer_loss_in_slices_equals_one_slice_and_the_gradient_flows_to_the_positions():
    """``answer_cross_entropy`` picks the answer positions of ``batch x time x width`` hidden states."""
    generator = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(WIDTH, VOCAB, bias=False)
    hidden = torch.randn(2, 40, WIDTH, generator=generator, requires_grad=True)
    positions = torch.randperm(80, generator=generator)[:N].sort().values
    targets = torch.randint(0, VOCAB, (N,), generator=generator)
    results = {}
    for rows in (None, 16):
        loss = answer_cross_entropy(hidden, positions, targets, head, rows=rows)
        results[rows] = loss.detach(), torch.autograd.grad(loss, hidden)[0]
    torch.testing.assert_close(results[16][0], results[None][0], rtol=1e-6, atol=0)
    torch.testing.assert_close(results[16][1], results[None][1], rtol=1e-5, atol=1e-8)
    flat_grad = results[None][1].reshape(80, WIDTH)
    untouched = torch.ones(80, dtype=torch.bool)
    untouched[positions] = False
    assert flat_grad[untouched].abs().max() == 0 and flat_grad[positions].abs().min() > 0
    want = F.cross_entropy(head(hidden.reshape(80, WIDTH)[positions]), targets)  # mean over the N answers
    torch.testing.assert_close(results[None][0], want.detach(), rtol=1e-6, atol=0)
