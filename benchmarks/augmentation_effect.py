"""Does augmentation help? theta-tiny on the bundled sample data, with and without --augment.

    python benchmarks/augmentation_effect.py [--epochs 20] [--seeds 42]

Both runs use the same seed, data, model, epochs and learning rate (the cpu-quickstart preset);
each best checkpoint is then evaluated with theta-eval's library on the paraphrased validation file
(sample:theta_sample_val.json, questions reworded from the training set). Prints validation
losses and ROUGE-L side by side, and writes benchmarks/results/augmentation_effect.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(augment: bool, epochs: float, seed: int, workdir: Path) -> dict:
    from theta_ai.config import resolve_config
    from theta_ai.eval.runner import EvalSettings, evaluate_model
    from theta_ai.training.run import train

    values = {"epochs": epochs, "seed": seed, "augment": augment, "checkpoint_dir": str(workdir / "models"),
              "logdir": str(workdir / "logs"), "generation_eval": 0,
              "data": ["sample:theta_sample_train.json"], "val_data": ["sample:theta_sample_val.json"]}
    start = time.perf_counter()
    result = train(resolve_config(values, preset="cpu-quickstart"))
    seconds = time.perf_counter() - start
    best = json.loads((result.best_dir / "theta_best.json").read_text())
    evaluated = evaluate_model(result.best_dir, settings=EvalSettings(batch_size=32, max_new_tokens=64))
    metrics = evaluated.metrics
    return {"augment": augment, "seed": seed, "epochs": epochs, "train_seconds": round(seconds, 1),
            "best_epoch": best["epoch"], "best_val_loss": best["value"],
            "rougeL": metrics["rougeL"], "f1": metrics["f1"], "bleu": metrics["bleu"],
            "answer_perplexity": metrics.get("answer_perplexity")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=20.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for augment in (False, True):
                rows.append(run(augment, args.epochs, seed, Path(tmp) / f"{seed}-{augment}"))
    print("| seed | augment | best epoch | best validation loss | ROUGE-L | F1 | BLEU | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {'on' if r['augment'] else 'off'} | {r['best_epoch']} | {r['best_val_loss']:.4f} | "
              f"{r['rougeL']:.4f} | {r['f1']:.4f} | {r['bleu']:.2f} | {r['train_seconds']} |")
    out = ROOT / "benchmarks" / "results" / "augmentation_effect.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
