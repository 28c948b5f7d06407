"""What keeping freed host memory for reuse (``--reuse-host-memory``, training/host_memory.py) buys a CPU training
step, side by side in one run: glibc's default allocator against theta's setting, for theta's loss path and for
the plain one (Trainer's: the model's own loss over full logits).

    python benchmarks/host_allocator.py                       # gpt2-124m and qwen3, 2 repeats: ~12 min, 2 cores
    python benchmarks/host_allocator.py --models gpt2-124m --repeats 3 --steps 6

Each optimizer step is what a theta run does on a CPU: 4 micro-batches of 4 rows (length drawn from 60-140 tokens,
seeded, the first 15 tokens of each row prompt), forward and backward, gradient clipping at 1.0 and fused AdamW.
With reuse the kept free memory goes back to the kernel after each step (``trim_kept_host_memory``, as a theta
run's ``HostMemoryTrimCallback`` does). One warm-up step, then ``--steps`` timed steps; the median of the repeats is reported with the peak resident
memory (``ru_maxrss``). Every (loss, allocator) pair runs in a fresh subprocess, alternating (A B C D A B C D ...),
so drift on the machine hits each alike.

Models (random weights, fixed seed): ``gpt2-124m`` = ``GPT2Config()`` (124.4M parameters, 50,257-token tied head);
``qwen3`` = the 4-layer 256-wide Qwen3 config of train_throughput.py with a 151,669-token tied head (42.0M).
``default`` is glibc as configured; ``reuse`` calls :func:`theta_ai.training.host_memory.reuse_freed_host_memory`
first. The plain loss path would gain the same from the environment form (``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=1073741824``) that any program can use; the table shows it for both paths.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("gpt2-124m", "qwen3")
MODES = ("plain/default", "plain/reuse", "theta/default", "theta/reuse")


def build_model(name: str):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    if name == "gpt2-124m":
        return GPT2LMHeadModel(GPT2Config(vocab_size=50257))
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=151669, hidden_size=256, intermediate_size=768,
                                        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                        head_dim=64, tie_word_embeddings=True))


def worker(model_name: str, mode: str, steps: int) -> dict:
    loss_path, allocator = mode.split("/")
    from theta_ai.training.host_memory import reuse_freed_host_memory, trim_kept_host_memory

    note = reuse_freed_host_memory() if allocator == "reuse" else None
    import torch
    from theta_ai.data.collate import answer_positions
    from theta_ai.training.loss import answer_cross_entropy, hidden_states_out

    model = build_model(model_name)
    model.train()
    vocab = model.config.vocab_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    rng = random.Random(0)

    def micro_batch():
        length = rng.randint(60, 140)
        ids = torch.randint(0, vocab, (4, length), generator=torch.Generator().manual_seed(rng.randrange(1 << 30)))
        labels = ids.clone()
        labels[:, :15] = -100
        if loss_path == "plain":
            loss = model(input_ids=ids, labels=labels).loss
        else:
            positions, targets = answer_positions(labels)
            with hidden_states_out(model) as head:
                loss = answer_cross_entropy(model(input_ids=ids).logits, positions, targets, head)
        loss.backward()

    def step():
        for _ in range(4):
            micro_batch()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        trim_kept_host_memory()  # what theta's HostMemoryTrimCallback does after each step (no-op without reuse)

    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"model": model_name, "mode": mode, "step_s": statistics.median(times),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "note": note}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start, {platform.libc_ver()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps)))
        return 0
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"command: python benchmarks/host_allocator.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for name in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"):
        env.pop(name, None)
    for model_name in args.models:
        results: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                out = subprocess.run([sys.executable, __file__, "--worker", model_name, mode, "--steps",
                                      str(args.steps)], env=env, capture_output=True, text=True, check=True)
                results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"\n{model_name}: s per optimizer step (4 x 4 rows, 60-140 tokens), median of {args.repeats}\n")
        print("| loss path | allocator | s / step | vs default | peak RSS MB | vs default |")
        print("|---|---|---:|---:|---:|---:|")
        for mode in MODES:
            path, allocator = mode.split("/")
            step = statistics.median(r["step_s"] for r in results[mode])
            peak = statistics.median(r["peak_mb"] for r in results[mode])
            base = results[f"{path}/default"]
            base_step = statistics.median(r["step_s"] for r in base)
            base_peak = statistics.median(r["peak_mb"] for r in base)
            print(f"| {path} | {allocator} | {step:.3f} | {base_step / step:.2f}x | {peak:,.0f} | "
                  f"{peak / base_peak - 1:+.1%} |")
        if any(r["note"] is None for r in results["theta/reuse"]):
            print("(reuse was not switched on in some runs: not glibc, or MALLOC_* / GLIBC_TUNABLES set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
