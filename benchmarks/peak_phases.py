"""Where a CPU training run sets its peak memory, and what glibc's allocator holds then.

    python benchmarks/peak_phases.py                                   # theta at 24, 64, 128 and 1,024 entries
    python benchmarks/peak_phases.py --configs plain theta theta:128 --repeats 2
    python benchmarks/peak_phases.py --configs theta theta@forward-end  # malloc_trim before every backward pass

Each configuration trains one epoch of ``train_throughput.py``'s cell (the same model folder, data and recipes,
``throughput_recipes.py``) in a fresh subprocess, configurations alternating. A configuration is a recipe
(``plain``, ``theta``, any ``train_throughput.py`` recipe), optionally ``:N`` (oneDNN's two kernel caches,
``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` and ``LRU_CACHE_CAPACITY``, set to N in the worker's environment; theta_ai
keeps a size the environment sets) and ``@forward-end`` or ``@micro-batch-start`` (``malloc_trim(0)`` there:
the free heap handed back to the kernel before each backward pass or each micro-batch).

At every phase boundary of every micro-batch (forward start and end: ``compute_loss``; backward end:
``Accelerator.backward``; optimizer step start and end: torch's global optimizer hooks) the worker records the
resident set, the peak so far (``ru_maxrss``) and glibc's ``mallinfo2`` (heap size, in use, free, mmapped). The
table gives the peak at the epoch's end (``train_throughput.py``'s "peak MB"), the phase in which it was reached,
the memory in use at the last backward end (heap + mmapped), and the seconds spent in forward passes, backward
passes and the whole step loop. Results: ``benchmarks/results/peak_phases.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput_recipes as tr

RESULTS = tr.ROOT / "benchmarks" / "results" / "peak_phases.json"
DEFAULT_CONFIGS = ("theta", "theta:64", "theta:128", "theta:1024")
TRIM_POINTS = {"forward-end": "forward_end", "micro-batch-start": "forward_start"}


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def parse_config(config: str) -> tuple[str, str | None, str | None]:
    """``recipe[:entries][@trim point]`` -> (recipe, entries, trim point)."""
    rest, _, trim = config.partition("@")
    recipe, _, entries = rest.partition(":")
    if recipe not in tr.RECIPES or (trim and trim not in TRIM_POINTS) or (entries and not entries.isdigit()):
        raise SystemExit(f"configuration {config!r}: RECIPE[:ENTRIES][@{'|'.join(TRIM_POINTS)}], RECIPE one of "
                         f"{', '.join(tr.RECIPES)}")
    return recipe, entries or None, TRIM_POINTS.get(trim)


def worker(recipe: str, trim_at: str | None, model_dir: Path, data_file: Path, val_file: Path) -> dict:
    import accelerate
    import torch.optim.optimizer as optimizer_hooks
    import transformers

    from theta_ai.training.trainer import ThetaTrainer

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    page = os.sysconf("SC_PAGE_SIZE")
    events = []

    def mark(phase: str) -> None:
        info = libc.mallinfo2()
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * page
        events.append({"phase": phase, "t": time.perf_counter(), "rss_mb": rss / 2**20,
                       "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                       "heap_mb": info.arena / 2**20, "in_use_mb": (info.uordblks + info.hblkhd) / 2**20,
                       "free_heap_mb": info.fordblks / 2**20})
        if phase == trim_at:
            libc.malloc_trim(0)

    depth = [0]  # ThetaTrainer.compute_loss calls Trainer's: only the outermost call marks the forward pass

    def wrapped(cls, name, before, after):
        inner = getattr(cls, name)

        def call(self, *args, **kwargs):
            depth[0] += 1
            try:
                if before and depth[0] == 1:
                    mark(before)
                out = inner(self, *args, **kwargs)
                if depth[0] == 1:
                    mark(after)
                return out
            finally:
                depth[0] -= 1
        setattr(cls, name, call)

    for cls in (ThetaTrainer, transformers.Trainer):
        if "compute_loss" in cls.__dict__:
            wrapped(cls, "compute_loss", "forward_start", "forward_end")
    wrapped(accelerate.Accelerator, "backward", None, "backward_end")
    optimizer_hooks.register_optimizer_step_pre_hook(lambda *a: mark("optimizer_start"))
    optimizer_hooks.register_optimizer_step_post_hook(lambda *a: mark("optimizer_end"))
    with tempfile.TemporaryDirectory() as workdir:
        run = tr.run_plain if recipe == "plain" else lambda *a: tr.run_theta(recipe, *a)
        result = run(model_dir, data_file, val_file, Path(workdir), dict(tr.HPARAMS))
    return {"peak_mb": result["peak_mb"], "events": events}


def summarize(events: list[dict], peak_mb: float) -> dict:
    reached = next(i for i, e in enumerate(events) if e["max_rss_mb"] >= peak_mb - 0.5)
    phase = {"forward_end": "forward", "backward_end": "backward", "optimizer_end": "optimizer step",
             "forward_start": "between micro-batches", "optimizer_start": "before the optimizer step"}

    def seconds(start: str, end: str) -> float:
        total, opened = 0.0, None
        for e in events:
            if e["phase"] == start and opened is None:
                opened = e["t"]
            elif e["phase"] == end and opened is not None:
                total, opened = total + e["t"] - opened, None
        return total

    steps = [e["t"] for e in events if e["phase"] == "optimizer_end"]
    last_backward = [e for e in events if e["phase"] == "backward_end"][-1]
    return {"peak_mb": peak_mb, "peak_in": phase.get(events[reached]["phase"], events[reached]["phase"]),
            "in_use_mb": last_backward["in_use_mb"], "free_heap_mb": last_backward["free_heap_mb"],
            "forward_s": seconds("forward_start", "forward_end"), "backward_s": seconds("forward_end", "backward_end"),
            "step_loop_s": steps[-1] - events[0]["t"] if steps else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="RECIPE[:ENTRIES][@TRIM] ...")
    p.add_argument("--model", default="gpt2-124m", help="a train_throughput.py model (default gpt2-124m)")
    p.add_argument("--dataset", default="bundled", choices=tr.ALL_DATASETS)
    p.add_argument("--examples", type=int, default=96)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)  # recipe trim model_dir data_file val_file
    args = p.parse_args(argv)
    if args.worker:
        recipe, trim_at, *paths = args.worker
        out = worker(recipe, None if trim_at == "-" else trim_at, *map(Path, paths))
        print("RESULT " + json.dumps(out))
        return 0
    configs = [(c, *parse_config(c)) for c in args.configs]
    rows: dict[str, list[dict]] = {c: [] for c, *_ in configs}
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        tr.build_model_folder(base / "model", args.model)
        (base / "train.json").write_text(json.dumps(tr.train_records(args.dataset, args.examples)))
        (base / "val.json").write_text(json.dumps(tr.val_records(args.dataset)))
        for rep in range(args.repeats):
            for config, recipe, entries, trim_at in configs:
                env = {k: v for k, v in os.environ.items() if k not in tr.CACHE_VARIABLES}
                env.update(tr.kernel_cache_env(entries) if entries else tr.RECIPE_ENV.get(recipe, {}))
                cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", recipe, trim_at or "-",
                       str(base / "model"), str(base / "train.json"), str(base / "val.json")]
                done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, cwd=str(tr.ROOT))
                line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    raise SystemExit(f"{config}: the worker failed\n{done.stderr[-3000:]}")
                out = json.loads(line[len("RESULT "):])
                rows[config].append(dict(summarize(out["events"], out["peak_mb"]), events=out["events"]))
                print(f"{config} repeat {rep + 1}: peak {out['peak_mb']:,.0f} MB", file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(["python", "benchmarks/peak_phases.py",
                                                               *(argv or sys.argv[1:])]), "rows": rows}))
    print(f"{args.model} x {args.dataset} ({args.examples} examples), {args.repeats} repeat(s), each value "
          "per repeat\n")
    print("| configuration | peak MB | peak in | in use at the last backward end MB | forward s | backward s | "
          "step loop s |\n|---|---:|---|---:|---:|---:|---:|")
    def joined(runs, key, fmt):
        return " / ".join(fmt.format(r[key]) for r in runs)

    for config, runs in rows.items():
        print(f"| `{config}` | {joined(runs, 'peak_mb', '{:,.0f}')} | {'/'.join(sorted({r['peak_in'] for r in runs}))}"
              f" | {joined(runs, 'in_use_mb', '{:,.0f}')} | {joined(runs, 'forward_s', '{:.1f}')} | "
              f"{joined(runs, 'backward_s', '{:.1f}')} | {joined(runs, 'step_loop_s', '{:.1f}')} |")
    medians = {c: statistics.median(r["peak_mb"] for r in runs) for c, runs in rows.items()}
    print("\nmedian peak: " + ", ".join(f"{c} {m:,.0f} MB" for c, m in medians.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
