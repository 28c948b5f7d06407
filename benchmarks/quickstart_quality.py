"""How good is the quick start? Runs it exactly as README.md says, in an empty temporary folder.

    python benchmarks/quickstart_quality.py                      # the preset as shipped
    python benchmarks/quickstart_quality.py --threads 1          # OMP/MKL threads for both commands
    python benchmarks/quickstart_quality.py --epochs 30 --learning-rate 5e-3 --train-args --augment

Steps (the README's quick start, nothing added):

    theta-train --preset cpu-quickstart                        # [+ the overrides given here]
    theta-eval --model-path models/quickstart/theta_best       # default data: the stored validation file

Prints the wall time of each command, ROUGE-L, token F1 and exact match of theta-eval on the bundled
held-out paraphrases (``sample:theta_sample_val.json``), the validation loss of ``theta_best``, and
three of the answers it gave (the best, the median and the worst by ROUGE-L). ``--keep DIR`` keeps the
run folder; ``--json FILE`` also writes the numbers as JSON. Uses the ``theta-train`` and
``theta-eval`` next to this Python (the venv's), so run it with the venv's interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _command(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found next to {sys.executable} or on PATH; install theta_ai first")
    return found


def _run(args: list[str], cwd: Path, env: dict, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(args, check=False, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{' '.join(args)} failed with exit code {done.returncode}; log tail:\n{tail}")
    return seconds


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quickstart(workdir: Path, train_overrides: list[str], threads: int | None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    train_cmd = [_command("theta-train"), "--preset", "cpu-quickstart", *train_overrides]
    eval_cmd = [_command("theta-eval"), "--model-path", "models/quickstart/theta_best"]
    train_s = _run(train_cmd, workdir, env, workdir / "train.log")
    eval_s = _run(eval_cmd, workdir, env, workdir / "eval.log")
    best_dir = workdir / "models" / "quickstart" / "theta_best"
    best = json.loads((best_dir / "theta_best.json").read_text())
    results = json.loads((best_dir / "eval" / "eval_results.json").read_text())
    rows = [json.loads(line) for line in (best_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    ranked = sorted(rows, key=lambda r: (-r["rougeL"], r["index"]))
    picks = {"best": ranked[0], "median": ranked[len(ranked) // 2], "worst": ranked[-1]}
    metrics = results["metrics"]
    return {
        "train_command": " ".join(["theta-train", *train_cmd[1:]]),
        "eval_command": " ".join(["theta-eval", *eval_cmd[1:]]),
        "threads": threads or os.environ.get("OMP_NUM_THREADS", "torch default"),
        "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
        "total_seconds": round(train_s + eval_s, 1),
        "best_epoch": best["epoch"], "best_metric": best["metric"], "val_loss": round(best["metrics"]["eval_loss"], 4),
        "num_examples": results["num_examples"],
        "rougeL": round(metrics["rougeL"], 4), "f1": round(metrics["f1"], 4),
        "exact_match": round(metrics["exact_match"], 4), "bleu": round(metrics["bleu"], 2),
        "categories": {name: c["count"] for name, c in results.get("per_category", {}).items() if c.get("count")},
        "examples": {name: {"question": r["question"], "reference": r["reference"], "prediction": r["prediction"],
                            "rougeL": round(r["rougeL"], 3)} for name, r in picks.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS / MKL_NUM_THREADS for both commands (default: as set in the shell)")
    parser.add_argument("--epochs", type=float, help="override the preset's epochs")
    parser.add_argument("--learning-rate", type=float, help="override the preset's learning rate")
    parser.add_argument("--batch-size", type=int, help="override the preset's batch size")
    parser.add_argument("--seed", type=int, help="override the seed (model init, data order, augmentation)")
    parser.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                        help="any further theta-train flags, e.g. --train-args --dropout 0 --no-augment (last)")
    parser.add_argument("--keep", type=Path, help="run in this (new or empty) folder and keep it")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args()

    overrides = []
    for flag, value in (("--epochs", args.epochs), ("--learning-rate", args.learning_rate),
                        ("--batch-size", args.batch_size), ("--seed", args.seed)):
        if value is not None:
            overrides += [flag, str(value)]
    overrides += args.train_args

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        if any(args.keep.iterdir()):
            raise SystemExit(f"{args.keep} is not empty; the quick start must start from an empty folder")
        result = quickstart(args.keep.resolve(), overrides, args.threads)
    else:
        with tempfile.TemporaryDirectory(prefix="theta-quickstart-") as tmp:
            result = quickstart(Path(tmp), overrides, args.threads)

    print(f"{result['train_command']}\n{result['eval_command']}   (threads: {result['threads']})")
    print(f"training  {result['train_seconds']:7.1f} s   (theta_best: epoch {result['best_epoch']}, "
          f"validation loss {result['val_loss']:.4f})")
    print(f"eval      {result['eval_seconds']:7.1f} s   ({result['num_examples']} held-out paraphrases)")
    print(f"total     {result['total_seconds']:7.1f} s")
    print(f"ROUGE-L {result['rougeL']:.4f}   F1 {result['f1']:.4f}   exact match {result['exact_match']:.4f}   "
          f"BLEU {result['bleu']:.2f}")
    print("categories: " + ", ".join(f"{name} {count}" for name, count in result["categories"].items()))
    for name, ex in result["examples"].items():
        print(f"\n[{name}, ROUGE-L {ex['rougeL']:.3f}]\n  question:  {ex['question']}\n"
              f"  reference: {_short(ex['reference'])}\n  model:     {_short(ex['prediction'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
