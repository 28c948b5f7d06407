"""Training throughput, side by side in one run: plain ``transformers.Trainer`` against theta-train's default
path and each theta-train speed option on top of it, on a GPT-2 and a Qwen3-family model, on two data sets.

    python benchmarks/train_throughput.py                    # the full matrix: ~20-25 min on 2 quiet CPU cores
    python benchmarks/train_throughput.py --quick            # smoke test: 1 repeat, 16 examples, a few minutes
    python benchmarks/train_throughput.py --models qwen3 --datasets long --recipes plain,theta,theta-unchunked
    python benchmarks/train_throughput.py --examples 512 --repeats 5   # longer epochs, more repeats
    python benchmarks/train_throughput.py --models qwen3 --datasets long512 --recipes plain,theta   # memory at 512

Models (each created once per invocation with a fixed seed, saved with ``save_pretrained`` beside its tokenizer,
and loaded from that folder by every recipe, so all start from identical weights):

* ``gpt2``: GPT-2, 4 layers, 256 wide, 4 heads, with the GPT-2 tokenizer (``../shared/tokenizers/gpt2``, 50,257
  tokens, pad = eos; no chat template, so theta's template auto is ``qa``), 16.3M parameters.
* ``qwen3``: ``Qwen3Config`` with 4 layers, 256 wide, 4 heads / 2 KV heads (head dim 64), MLP 768, tied
  embeddings, vocab = len(Qwen3 tokenizer) = 151,669, with the real Qwen3 tokenizer and chat template
  (``../shared/tokenizers/qwen3``; theta's template auto is ``chat``), 42.0M parameters, most of them the head.
* ``gpt2-124m`` (only when named in ``--models``): GPT-2 small's shape (``GPT2Config()``: 12 layers, 768 wide,
  12 heads) with the GPT-2 tokenizer, 124.4M parameters: the configuration of the issue's MFU target.

Data sets (``--examples N`` takes the first N after a seeded shuffle; defaults below):

* ``bundled``: the 336 records of the shipped ``theta_sample_train.json`` three times over, the third copy with
  every 4th answer followed by the next record's (the real length distribution plus a tail to ~350 tokens).
* ``long``: short questions, long answers: each sample question with 3 sample answers joined by a blank line
  (answers are ~90% of the tokens; the run prints the measured share for each model).
* ``long512`` (only when named in ``--datasets``): the same with 10 answers joined (400-700 tokens; most are cut
  at the 512-token maximum): the issue's memory target (a 151k vocabulary at 512 tokens, batch 4).
Validation (only for the loss after training): the 60 records of ``theta_sample_val.json``, for ``long`` with 3
answers joined the same way.

Recipes (same examples, effective batch 4 x 4 accumulation = 16, lr 5e-5, warmup 500, weight decay 0.01, seed
42, max length 512, one epoch: theta-train's defaults):

* ``plain``: plain ``transformers.Trainer`` with the best plain recipe: each example rendered as the text theta's
  template auto writes (GPT-2: ``"Question: {q}\\nAnswer: {a}<|endoftext|>"``; Qwen3:
  ``tokenizer.apply_chat_template([user q, assistant a], tokenize=False)``, i.e. ``<|im_start|>user\\n{q}<|im_end|>
  \\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n{a}<|im_end|>\\n``), tokenized (cut at 512),
  ``DataCollatorForLanguageModeling(mlm=False)`` padding each batch to its longest row, and
  ``train_sampling_strategy="group_by_length"``; fp32 on the CPU (Trainer's default; fp16 on CUDA). Labels =
  input_ids with the pad id masked: the loss is on every token, prompt and template included; with GPT-2 (pad =
  eos) the EOS is masked too, with Qwen3 (pad ``<|endoftext|>``) nothing is.
* ``theta``: theta-train's default path: ``resolve_config`` (defaults, the model folder, ``epochs=1``) ->
  ``prepare_run`` -> ``theta_ai.training.run.train``: answer-only loss (theta trains the answer and the token
  closing its turn; Qwen3's trailing ``\\n`` is not in its rows), length grouping, padding collator, LM head
  trimmed to the columns that carry answer labels, ``--chunked-loss auto`` (on for Qwen3's vocabulary, off for
  GPT-2's) and ``--precision auto`` (its CPU bf16 probe runs for models of 20M+ parameters on CPUs with
  avx512_bf16/amx, so it may pick bf16 for qwen3; the table says what it chose), plus theta's per-epoch
  evaluation (loss + 8 generated answers) and checkpoints, which happen after the timed epoch.
* ``theta-packed`` (``packing=True``), ``theta-chunked`` (``chunked_loss="on"``), ``theta-unchunked``
  (``chunked_loss="off"``), ``theta-bf16`` (``precision="bf16"``: CPU bf16 autocast over fp32 weights),
  ``theta-fp32`` (``precision="fp32"``: theta's path without the bf16 probe's choice, where it picks bf16),
  ``theta-compile`` (``torch_compile=True``), ``theta-reuse`` (``reuse_host_memory=True``: freed host memory kept
  for reuse within each step, opt-in; theta and plain run with glibc's default allocator;
  benchmarks/host_allocator.py isolates it; the tables of 2026-12-04/06 name theta's then default without it
  ``theta-no-reuse``), ``theta-onednn-1024`` (theta's default run with oneDNN's own kernel-cache sizes in its
  environment, ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=LRU_CACHE_CAPACITY=1024``, which theta_ai then keeps; every
  table before this recipe ran that way), ``theta-onednn-128`` (the same with 128 each, the bound theta_ai set
  before it sized the caches to one micro-batch's kernels, 2026-12-07), ``theta-no-dropout`` (``dropout=0.0``:
  the model's dropout off, attention's included; a different training, not a speed option: it measures what
  attention dropout costs where SDPA then leaves its fused kernel): one option each on top of
  ``theta``. By default each model runs
  only the one of theta-chunked / theta-unchunked that differs from its default (gpt2: chunked, qwen3:
  unchunked); ``--recipes`` runs whatever it names.

How: for each (model, data set), ``--repeats`` rounds alternate the recipes (A B C ... A B C ...), each run in a
fresh subprocess (``--worker RECIPE``), so machine drift hits every recipe alike; medians are reported. The
inductor cache of ``theta-compile`` lives in the invocation's folder: its first repeat compiles cold, the
others find the cache warm.

What is measured, per recipe (median over repeats):

* **epoch s**: wall time from Trainer's ``on_train_begin`` to ``on_epoch_end`` (a callback): the training steps
  only. **x plain** = plain's epoch s / this recipe's (> 1 = faster). **step 1 s** = up to the end of the first
  optimizer step (compilation happens there; length grouping also puts the longest batch first), **steps 2+ s**
  = the rest of the epoch, with its own ratio to plain: compile time is the step-1 difference to ``theta``, and
  the table's notes give it for the cold and the warm cache.
* **tok/s**: real (non-padding) training tokens per second of the epoch; **pad %**: padding share of the
  positions computed (counted by a wrapper around each recipe's collator).
* **MFU %** = 6 x parameters x real tokens/s over the ``torch.mm`` peak (2048 x 2048, best of 10, torch's thread
  count) measured in this invocation for the precision the run used (fp32, or bf16 for bf16 runs; the largest of
  the measurements before and after the runs); **MFU % fp32 peak** gives bf16 runs against the fp32 peak too.
  Parameters are counted once (tied heads), attention-score FLOPs are ignored, padding is not counted as work,
  and the LM-head trimming and the chunked loss's recomputation are not credited: it is model FLOPs utilisation.
* **peak MB**: the worker's peak RSS at the end of the epoch (``ru_maxrss``: model, data, optimizer, activations;
  on CUDA ``torch.cuda.max_memory_allocated``).
* **val loss**: after training, the mean loss per answer token (answer + the token closing its turn) over the
  validation set, rows formatted by theta's template auto, fp32, eval mode: computed the same way for every
  recipe, outside the timed epoch. **d val %** = its difference to plain's. (With warmup 500 the learning rate of
  a short epoch stays near 0, so this only catches a recipe that breaks the model; ``--warmup-steps 0`` makes it
  a sharper check.)

Default sizes: bundled 96 examples (6 optimizer steps), long 48 (3 steps), 3 repeats: 2 models x 2 data sets x
6 recipes x 3 = 72 runs, each 10-40 s (start-up, prepare, epoch, theta's evaluation and saves, the validation
pass), estimated 20-25 minutes on 2 quiet cores. ``--quick``: 16 examples (1 optimizer step) and 1 repeat.

Results go to ``benchmarks/results/train_throughput.json`` (git-ignored) and markdown tables on stdout, one per
(model, data set), each headed with the machine, the 1-minute load average at its start and end, the date and
the exact command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # throughput_recipes, also under python -m / another cwd

import throughput_recipes as tr  # noqa: E402

RESULTS = tr.ROOT / "benchmarks" / "results" / "train_throughput.json"
DEFAULT_EXAMPLES = {"bundled": 96, "long": 48, "long512": 32}
QUICK_EXAMPLES = {"bundled": 16, "long": 16, "long512": 8}


# ---------------------------------------------------------------------------- worker


def worker(args) -> int:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    hp = dict(tr.HPARAMS, warmup_steps=args.warmup_steps)
    paths = Path(args.model_dir), Path(args.data_file), Path(args.val_file), workdir
    try:
        out = tr.run_plain(*paths, hp) if args.worker == "plain" else tr.run_theta(args.worker, *paths, hp)
        out["ok"] = True
    except Exception as exc:  # reported in the table, the other recipes still run
        import traceback

        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    out.update(recipe=args.worker, torch_threads=torch.get_num_threads(), pid=os.getpid())
    Path(args.json_out).write_text(json.dumps(out, indent=2, default=str))
    return 0 if out["ok"] else 1


# ---------------------------------------------------------------------------- report


def machine_description() -> dict:
    import torch
    import transformers

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def summarize(runs: list[dict], params: int, peaks: dict[str, float]) -> dict:
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        return {"ok": False, "error": runs[0].get("error") if runs else "not run"}

    def med(key):
        vals = [r[key] for r in ok if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    first = ok[0]
    epoch, precision = med("epoch_s"), first["precision"]
    flops = 6 * params * first["real_tokens"] / epoch
    return {"ok": True, "runs": len(ok), "failed_runs": len(runs) - len(ok), "precision": precision,
            "epoch_s": epoch, "epoch_s_all": [r["epoch_s"] for r in ok], "first_step_s": med("first_step_s"),
            "first_step_s_all": [r["first_step_s"] for r in ok], "later_steps_s": med("later_steps_s"),
            "optimizer_steps": first["optimizer_steps"], "examples": first["examples"],
            "real_tokens": first["real_tokens"], "positions": first["positions"],
            "label_positions": first["label_positions"], "tokens_per_s": first["real_tokens"] / epoch,
            "pad_fraction": 1 - first["real_tokens"] / first["positions"],
            "mfu": flops / peaks.get(precision, peaks["fp32"]), "mfu_fp32_peak": flops / peaks["fp32"],
            "peak_mb": med("peak_mb"), "val_answer_loss": med("val_answer_loss"), "train_loss": med("train_loss"),
            "loss_over": first["loss_over"], "prepare_s": med("prepare_s"), "after_epoch_s": med("after_epoch_s"),
            "collator_s": med("collator_s"), "chunked_loss": first.get("chunked_loss"),
            "theta_notes": first.get("theta_notes"), "hparam_drift": first.get("hparam_drift"),
            "loadavg_1m": statistics.mean(x for r in ok for x in r.get("loadavg_1m", [0]))}


def fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def cell_notes(cell: dict) -> list[str]:
    s = cell["summaries"]
    notes = [f"`{name}` failed: {v.get('error', '?')[:300]}" for name, v in s.items() if not v.get("ok")]
    theta = s.get("theta", {})
    if theta.get("ok"):
        notes.append(f"theta's default here: template {cell['tokens']['template']}, precision {theta['precision']}, "
                     f"chunked loss {'on' if theta['chunked_loss'] else 'off'}")
        notes += [f"theta said: {n}" for n in theta.get("theta_notes") or [] if n.startswith("precision auto")]
        if theta.get("hparam_drift"):
            notes.append(f"theta's defaults differ from the shared settings: {theta['hparam_drift']}")
    compiled = s.get("theta-compile", {})
    if compiled.get("ok") and theta.get("ok"):
        cold, warm = compiled["first_step_s_all"][0], compiled["first_step_s_all"][1:]
        base = theta["first_step_s"]
        line = f"theta-compile: step 1 {cold:.1f} s with a cold inductor cache (compile ~{cold - base:.1f} s over theta)"
        if warm:
            w = statistics.median(warm)
            line += f", {w:.1f} s with a warm one (~{w - base:.1f} s)"
        notes.append(line + f"; theta's step 1: {base:.1f} s")
    notes += cell.get("skipped", [])
    return notes


def markdown_table(cell: dict, machine: dict, peaks: dict[str, float], command: str) -> str:
    m, d, tok, s = cell["model_info"], cell["dataset"], cell["tokens"], cell["summaries"]
    plain = s.get("plain") if s.get("plain", {}).get("ok") else None
    lines = [
        f"### {cell['model']} ({m['parameters'] / 1e6:.1f}M parameters) x {d}: {cell['examples']} examples, "
        f"{tok['tokens']:,} tokens, answers {100 * tok['answer_share']:.0f}% of them",
        "",
        f"{machine['cpu']}, {machine['cores']} cores (torch threads {machine['torch_threads']}"
        + (f", OMP_NUM_THREADS={machine['omp_num_threads']}" if machine.get("omp_num_threads") else "")
        + f"), torch {machine['torch']}, transformers {machine['transformers']}; matmul peak "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
        + f"; load average (1 min) {cell['load_start']:.2f} at start, {cell['load_end']:.2f} at end; "
        f"{cell['started']} to {cell['ended']}; `{command}`; {cell['repeats']} repeat(s), medians.",
        "",
        "| recipe | precision | epoch s | x plain | step 1 s | steps 2+ s | x plain (2+) | tok/s | pad % | MFU % | "
        "MFU % fp32 peak | peak MB | val loss | d val % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in s.items():
        if not v.get("ok"):
            lines.append(f"| `{name}` | failed (see below) |" + " |" * 12)
            continue
        ratio = plain["epoch_s"] / v["epoch_s"] if plain else None
        later = (plain["later_steps_s"] / v["later_steps_s"]
                 if plain and plain.get("later_steps_s") and v.get("later_steps_s") else None)
        dval = (100 * (v["val_answer_loss"] / plain["val_answer_loss"] - 1)
                if plain and plain.get("val_answer_loss") and v.get("val_answer_loss") is not None else None)
        lines.append(
            f"| `{name}` | {v['precision']} | {v['epoch_s']:.1f} | {fmt(ratio, '.2f')} | {fmt(v['first_step_s'], '.1f')} "
            f"| {fmt(v['later_steps_s'], '.1f')} | {fmt(later, '.2f')} | {v['tokens_per_s']:.0f} | "
            f"{100 * v['pad_fraction']:.1f} | {100 * v['mfu']:.1f} | "
            f"{fmt(100 * v['mfu_fp32_peak'] if v['precision'] != 'fp32' else None, '.1f')} | {v['peak_mb']:,.0f} | "
            f"{fmt(v['val_answer_loss'], '.4f')} | {fmt(dval, '+.2f')} |")
    notes = cell_notes(cell)
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


# ---------------------------------------------------------------------------- parent


def recipes_for(model: str, vocab: int, recipes: list[str], explicit: bool) -> tuple[list[str], list[str]]:
    """The recipes a model runs, and a note for each left out: without --recipes, the chunked-loss variant that
    equals theta's own default for this vocabulary (--chunked-loss auto) is not run twice."""
    if explicit:
        return recipes, []
    from theta_ai.planner.activations import AUTO_MIN_VOCAB

    same = "theta-chunked" if vocab >= AUTO_MIN_VOCAB else "theta-unchunked"
    return [r for r in recipes if r != same], [
        f"`{same}` not run: it is theta's default for this model (--chunked-loss auto is "
        f"{'on' if same == 'theta-chunked' else 'off'} for a {vocab:,}-token vocabulary; the threshold is "
        f"{AUTO_MIN_VOCAB:,})"]


def run_one(cell_dir: Path, recipe: str, rep: int, model_dir: Path, data_file: Path, val_file: Path,
            warmup_steps: int, env: dict) -> dict:
    done_file = cell_dir / f"{recipe}-{rep}.done.json"
    if done_file.is_file():  # finished in an earlier invocation with --keep-dir
        return dict(json.loads(done_file.read_text()), reused=True)
    json_out, log_file = cell_dir / f"{recipe}-{rep}.json", cell_dir / f"{recipe}-{rep}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", recipe, "--json-out", str(json_out),
           "--model-dir", str(model_dir), "--data-file", str(data_file), "--val-file", str(val_file),
           "--workdir", str(cell_dir / f"{recipe}-{rep}"), "--warmup-steps", str(warmup_steps)]
    loads = [os.getloadavg()[0]]
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, env=dict(env, **tr.RECIPE_ENV.get(recipe, {})), cwd=str(tr.ROOT), stdout=log,
                                stderr=subprocess.STDOUT)
        while proc.poll() is None:  # sample the load while the worker runs
            time.sleep(2)
            loads.append(os.getloadavg()[0])
    if json_out.is_file():
        result = json.loads(json_out.read_text())
    else:
        result = {"ok": False, "error": f"worker exited {proc.returncode}: "
                                        f"{log_file.read_text(errors='replace')[-1500:]}"}
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.update(subprocess_wall_s=time.perf_counter() - t, loadavg_1m=loads,
                  subprocess_cpu_s=after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
                  finished_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    if result.get("ok"):
        done_file.write_text(json.dumps(result, indent=2, default=str))
    return result


def split_list(values: list[str], choices: tuple[str, ...], flag: str) -> list[str]:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise SystemExit(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(choices)}")
    return list(dict.fromkeys(names))


def parent(args) -> int:
    models = split_list(args.models, (*tr.MODELS, *tr.TOKENIZER_OF), "--models")
    datasets = split_list(args.datasets, tr.ALL_DATASETS, "--datasets")
    recipes = split_list(args.recipes or list(tr.RECIPES), tr.RECIPES, "--recipes")
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = {d: args.examples or (QUICK_EXAMPLES if args.quick else DEFAULT_EXAMPLES)[d] for d in datasets}
    omp = os.environ.get("OMP_NUM_THREADS")
    command = (f"OMP_NUM_THREADS={omp} " if omp else "") + shlex.join(
        ["python", str(Path(__file__).resolve().relative_to(tr.ROOT)), *sys.argv[1:]])
    with contextlib.ExitStack() as stack:
        if args.keep_dir:  # finished runs are reused when the same command is run again
            tmp = Path(args.keep_dir).resolve()
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="theta-throughput-")))
        meta = {"sizes": sizes, "seed": tr.SEED, "warmup_steps": args.warmup_steps, "repeats": repeats}
        meta_file = tmp / "meta.json"
        if meta_file.is_file() and json.loads(meta_file.read_text()) != json.loads(json.dumps(meta)):
            raise SystemExit(f"--keep-dir {tmp}: holds runs of other settings; use another folder")
        meta_file.write_text(json.dumps(meta))
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
                   TORCHINDUCTOR_CACHE_DIR=str(tmp / "inductor-cache"))  # cold for theta-compile's first repeat
        machine = machine_description()
        kinds = ("fp32", "fp16") if machine.get("gpu") else ("fp32", "bf16")
        peak_runs = {k: [tr.matmul_peak_flops(k)] for k in kinds}
        print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} ({machine['torch_threads']} "
              f"threads), transformers {machine['transformers']}; matmul peak "
              + ", ".join(f"{k} {v[0] / 1e9:.0f} GFLOP/s" for k, v in peak_runs.items()), flush=True)
        cells = []
        for model in models:
            model_dir = tmp / f"model-{model}"
            info_file = model_dir / "benchmark_model.json"
            if info_file.is_file():
                model_info = json.loads(info_file.read_text())
            else:
                model_info = tr.build_model_folder(model_dir, model)
                info_file.write_text(json.dumps(model_info))
            tokenizer = tr.load_tokenizer(model)
            for dataset in datasets:
                cell_dir = tmp / f"{model}-{dataset}"
                cell_dir.mkdir(exist_ok=True)
                records = tr.train_records(dataset, sizes[dataset])
                data_file, val_file = cell_dir / "train.json", cell_dir / "val.json"
                data_file.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
                val_file.write_text(json.dumps(tr.val_records(dataset), ensure_ascii=False), encoding="utf-8")
                tokens = tr.token_counts(records, tokenizer)
                cell_recipes, skipped = recipes_for(model, model_info["vocab_size"], recipes, bool(args.recipes))
                print(f"\n== {model} ({model_info['parameters'] / 1e6:.1f}M) x {dataset}: {len(records)} examples, "
                      f"{tokens['tokens']:,} tokens (template {tokens['template']}), answer share "
                      f"{100 * tokens['answer_share']:.1f}%; {repeats} x {', '.join(cell_recipes)}", flush=True)
                cell = {"model": model, "dataset": dataset, "examples": len(records), "model_info": model_info,
                        "tokens": tokens, "recipes": cell_recipes, "skipped": skipped, "repeats": repeats,
                        "load_start": os.getloadavg()[0], "started": time.strftime("%Y-%m-%d %H:%M"), "runs": {}}
                cell["runs"] = {r: [] for r in cell_recipes}
                for rep in range(repeats):
                    for recipe in cell_recipes:
                        r = run_one(cell_dir, recipe, rep, model_dir, data_file, val_file, args.warmup_steps, env)
                        cell["runs"][recipe].append(r)
                        status = (f"epoch {r['epoch_s']:.1f} s ({r['optimizer_steps']} steps, {r['precision']}), "
                                  f"val loss {r['val_answer_loss']:.4f}" if r.get("ok") else f"FAILED: {r['error'][:300]}")
                        print(f"[{rep + 1}/{repeats}] {recipe:<16} {status}; subprocess {r['subprocess_wall_s']:.0f} s, "
                              f"load {statistics.mean(r['loadavg_1m']):.1f}" + (" (kept)" if r.get("reused") else ""),
                              flush=True)
                cell.update(load_end=os.getloadavg()[0], ended=time.strftime("%H:%M"))
                cells.append(cell)
        for k in kinds:
            peak_runs[k].append(tr.matmul_peak_flops(k))
    peaks = {k: max(v) for k, v in peak_runs.items()}
    tables = []
    for cell in cells:
        cell["summaries"] = {r: summarize(cell["runs"][r], cell["model_info"]["parameters"], peaks)
                             for r in cell["recipes"]}
        tables.append(markdown_table(cell, machine, peaks, command))
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"command": command, "machine": machine, "matmul_peak_flops": peaks,
                                    "matmul_peak_runs": peak_runs, "hparams": dict(tr.HPARAMS,
                                                                                   warmup_steps=args.warmup_steps),
                                    "seed": tr.SEED, "repeats": repeats, "order": "interleaved per (model, dataset)",
                                    "cells": cells, "tables": tables}, indent=2, default=str))
    print()
    print("\n".join(tables))
    print(f"written to {out_path}")
    return 0 if all(s.get("ok") for c in cells for s in c["summaries"].values()) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(tr.MODELS), help="comma-separated: gpt2,qwen3 (default both), gpt2-124m (GPT-2 small's shape)")
    p.add_argument("--datasets", nargs="+", default=list(tr.DATASETS), help="comma-separated: bundled,long (default both), long512 (answers cut at 512 tokens: the memory target)")
    p.add_argument("--recipes", nargs="+", help=f"comma-separated, in this order (default: all of {','.join(tr.RECIPES)} "
                                                "but the chunked-loss variant equal to theta's default)")
    p.add_argument("--repeats", type=int, help="interleaved rounds per (model, data set); medians (default 3, --quick 1)")
    p.add_argument("--examples", type=int, help=f"training examples of every data set (default {DEFAULT_EXAMPLES})")
    p.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK_EXAMPLES} examples, 1 repeat")
    p.add_argument("--warmup-steps", type=int, default=tr.HPARAMS["warmup_steps"],
                   help="warmup of every recipe (default theta's 500; 0 makes the validation loss a sharper check)")
    p.add_argument("--out", default=str(RESULTS), help="JSON results file")
    p.add_argument("--keep-dir", help="keep models, data and finished runs in this folder; the same command run again "
                                      "skips the finished runs (for machines where runs get killed)")
    p.add_argument("--worker", choices=tr.RECIPES, help=argparse.SUPPRESS)  # worker mode (internal)
    for name in ("--json-out", "--model-dir", "--data-file", "--val-file", "--workdir"):
        p.add_argument(name, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return worker(args) if args.worker else parent(args)


if __name__ == "__main__":
    sys.exit(main())
