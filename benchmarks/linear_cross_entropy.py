"""The LM head + cross-entropy alone, side by side: the plain path (``F.cross_entropy(F.linear(h, W).float())``,
what a model's own loss does) against theta's fused one (``theta_ai.training.linear_cross_entropy``), forward +
backward, in fp32 and under CPU bf16 autocast, alternating, median of ``--repeats``.

    python benchmarks/linear_cross_entropy.py                      # Qwen3's vocabulary, 720 answer positions
    python benchmarks/linear_cross_entropy.py --vocab 50257 --positions 760 --width 256   # the GPT-2 configs'

Prints one markdown table: milliseconds per forward + backward and the fused path's speed-up, for one slice of
all positions and for theta's 256 MiB slices (``--chunked-loss``), plus the largest gradient difference to the
plain path relative to the largest gradient.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from theta_ai.training.linear_cross_entropy import linear_cross_entropy
from theta_ai.training.loss import chunk_rows


def _one(kind: str, hidden0, weight0, targets, bf16: bool, rows):
    hidden = hidden0.clone().requires_grad_()
    weight = weight0.clone().requires_grad_()
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if kind == "plain":
            loss = F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")
        else:
            loss = linear_cross_entropy(hidden, weight, None, targets, rows)
    (loss / targets.numel()).backward()
    return time.perf_counter() - start, hidden.grad, weight.grad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=151_669)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--positions", type=int, default=720, help="answer positions of one micro-batch")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.positions, args.width, generator=generator)
    weight = torch.randn(args.vocab, args.width, generator=generator) * 0.02
    targets = torch.randint(0, args.vocab, (args.positions,), generator=generator)
    sliced = chunk_rows(args.vocab)
    variants = [("plain", None), ("fused", None), ("fused", sliced)]
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; {args.positions} positions x {args.width} wide x {args.vocab:,} vocabulary; "
          f"median of {args.repeats}, alternating\n")
    print("| precision | plain ms | fused, one slice ms | x plain | fused, slices of "
          f"{sliced} rows, ms | x plain | max grad diff (one slice, slices) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for bf16 in (False, True):
        times = {v: [] for v in variants}
        grads = {}
        for v in variants:  # warm-up, and the gradients compared
            _, gh, gw = _one(v[0], hidden, weight, targets, bf16, v[1])
            grads[v] = (gh, gw)
        for _ in range(args.repeats):
            for v in variants:
                times[v].append(_one(v[0], hidden, weight, targets, bf16, v[1])[0])
        ms = {v: 1e3 * statistics.median(t) for v, t in times.items()}
        ref = grads[variants[0]]
        diffs = [max(float((g - r).abs().max() / r.abs().max()) for g, r in zip(grads[v], ref)) for v in variants[1:]]
        plain = ms[variants[0]]
        print(f"| {'bf16 autocast' if bf16 else 'fp32'} | {plain:.0f} | {ms[variants[1]]:.0f} | "
              f"{plain / ms[variants[1]]:.2f} | {ms[variants[2]]:.0f} | {plain / ms[variants[2]]:.2f} | "
              f"{diffs[0]:.1e}, {diffs[1]:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
