"""``--precision auto`` on a CPU: bf16 autocast only where a short probe shows this CPU trains faster in it.

Some CPUs multiply bf16 matrices several times faster than fp32 (AVX512-BF16, AMX); others emulate bf16 and are
slower in it. Matrix speed alone overstates the gain of a whole training step (casts, norms and the optimizer stay
fp32), so the probe times what training does: a forward and backward pass of the run's own model on a small
batch, in fp32 and under ``torch.autocast("cpu", torch.bfloat16)``, alternating, best of three each. bf16 is
chosen when it is at least :data:`MIN_SPEEDUP` times faster; the banner says which was chosen and why.

The probe runs only where it can pay: the CPU reports native bf16 instructions, and the model has at least
:data:`MIN_PARAMETERS` parameters (below that a step is overhead, not matrix work). It leaves the model as it
found it (no gradients, same mode) and restores torch's random state, so a seeded run is the same run whatever
the probe did. A resumed run keeps the precision recorded in its checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

MIN_SPEEDUP = 1.15
MIN_PARAMETERS = 20_000_000
PROBE_BATCH, PROBE_TOKENS, PROBE_REPEATS = 2, 128, 3


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU flags list bf16 matrix instructions (``avx512_bf16``, ``amx_bf16``; Linux' /proc/cpuinfo)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                      if line.startswith("flags")), []))
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class ProbeResult:
    fp32_s: float
    bf16_s: float

    @property
    def speedup(self) -> float:
        return self.fp32_s / self.bf16_s

    @property
    def bf16_wins(self) -> bool:
        return self.speedup >= MIN_SPEEDUP


def _step_loss(model, ids: torch.Tensor, loss_path: tuple[bool, bool]) -> torch.Tensor:
    """The loss as the training step computes it: the model's own, or (``loss_path`` = (chunked, answer_head),
    training/loss.py) the fused answer-token head, every position but the last predicting the next token."""
    chunked, answer_head = loss_path
    if not answer_head:
        return model(input_ids=ids, labels=ids).loss
    from theta_ai.data.collate import answer_positions
    from theta_ai.training.loss import answer_cross_entropy, chunk_rows, hidden_states_out

    with hidden_states_out(model) as head:
        hidden = model(input_ids=ids).logits
    positions, targets = answer_positions(ids)
    return answer_cross_entropy(hidden, positions, targets, head,
                                rows=chunk_rows(head.out_features) if chunked else None)


def _step_seconds(model, ids: torch.Tensor, bf16: bool, loss_path: tuple[bool, bool]) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = _step_loss(model, ids, loss_path)
    loss.backward()
    return time.perf_counter() - start


def probe_cpu_bf16(model, batch: int = PROBE_BATCH, tokens: int = PROBE_TOKENS,
                   repeats: int = PROBE_REPEATS, loss_path: tuple[bool, bool] = (False, False)) -> ProbeResult:
    """Time a training step's forward + backward of ``model`` in fp32 and under bf16 autocast (best of ``repeats``),
    with the loss computed as the run will (``loss_path``: (chunked, answer_head) of
    :func:`theta_ai.training.loss.loss_path_choice`; the fused head changes how much bf16 gains)."""
    rng = torch.get_rng_state()
    was_training = model.training
    vocab = int(getattr(model.config, "vocab_size", 1000))
    ids = torch.randint(0, vocab, (batch, tokens), generator=torch.Generator().manual_seed(0))
    model.train()
    best = {False: float("inf"), True: float("inf")}
    try:
        _step_seconds(model, ids[:, :16], False, loss_path)  # first-call set-up (allocator, kernels) is not the cost
        _step_seconds(model, ids[:, :16], True, loss_path)
        for _ in range(repeats):
            for bf16 in (False, True):
                best[bf16] = min(best[bf16], _step_seconds(model, ids, bf16, loss_path))
    finally:
        for p in model.parameters():
            p.grad = None
        model.train(was_training)
        torch.set_rng_state(rng)
    return ProbeResult(best[False], best[True])


def choose_cpu_precision(model, recorded: str | None = None,
                         loss_path: tuple[bool, bool] = (False, False)) -> tuple[bool, str | None]:
    """(bf16?, the banner's line) for ``--precision auto`` on a CPU; ``recorded`` = a resumed run's precision;
    ``loss_path``: how the run computes its loss (see :func:`probe_cpu_bf16`)."""
    if recorded is not None:
        return recorded == "bf16", None
    parameters = sum(p.numel() for p in model.parameters())
    if parameters < MIN_PARAMETERS or not cpu_has_native_bf16():
        return False, None
    result = probe_cpu_bf16(model, loss_path=loss_path)
    if result.bf16_wins:
        return True, (f"precision auto: a training step of this model ran {result.speedup:.2f}x faster under bf16 "
                      f"autocast on this CPU ({result.fp32_s * 1e3:.0f} ms fp32, {result.bf16_s * 1e3:.0f} ms bf16), so "
                      f"this run uses bf16 autocast over fp32 weights (--precision fp32 to keep fp32)")
    return False, (f"precision auto: bf16 autocast was not faster on this CPU ({result.speedup:.2f}x); training in "
                   f"fp32")
