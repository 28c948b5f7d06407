"""Training throughput, side by side: the origin's pad-to-512 recipe, run_clm-style dynamic padding,
Trainer's length grouping, and theta-train's own pipeline (padded and packed).

    python benchmarks/train_throughput.py                       # 4-layer 256-wide GPT-2, 1,008 examples, 1 repeat
    python benchmarks/train_throughput.py --quick               # 128 examples: a smoke test in ~1-2 minutes on 2 cores
    python benchmarks/train_throughput.py --repeats 3           # A B C D E A B C D E ..., median per recipe
    python benchmarks/train_throughput.py --model-size 124m     # the GPT-2 small config (GPT2Config())
    python benchmarks/train_throughput.py --recipes grouped theta

Every recipe trains the *same* freshly initialised model (created once with a fixed seed and saved with
``save_pretrained``, together with the GPT-2 tokenizer, pad = eos) on the *same* examples, with the same
effective batch (4 per step x 4 accumulation = 16 examples per optimizer step), learning rate 5e-5,
warmup 500, weight decay 0.01, seed 42, one epoch, fp32 on the CPU (fp16 on CUDA, as theta-train's
``--precision auto``). Each run happens in a fresh subprocess (``--worker RECIPE``), and the runs are
interleaved (A B C ... A B C ...) so that machine drift hits every recipe alike.

Recipes
-------
``pad512``        plain ``transformers.Trainer``; ``"Question: {q}\\nAnswer: {a}<eos>"`` tokenized with
                  ``padding="max_length", max_length=512, truncation=True``; labels = input_ids with the pad
                  positions (found by the attention mask, since GPT-2's pad *is* its EOS) set to -100. The
                  loss is on every real token, prompt included: the origin's recipe.
``dynamic``       plain Trainer, the same text without padding, ``DataCollatorForLanguageModeling(mlm=False)``
                  padding each batch to its longest row (run_clm style). That collator masks every token
                  whose id is the pad id, so with pad == eos it also masks each example's EOS: the model
                  never learns to stop. Kept as is, because it is what run_clm users get.
``grouped``       ``dynamic`` plus ``train_sampling_strategy="group_by_length"``.
``theta``         theta_ai's own path: ``resolve_config`` (defaults, model pointed at the saved folder,
                  ``epochs=1``) -> ``prepare_run`` -> ``theta_ai.training.run.train``, i.e. answer-only loss,
                  theta's collator and length grouping, and theta's per-epoch evaluation and checkpoint.
``theta-packed``  the same with ``packing=True``.

What is measured
----------------
* **epoch s**: wall time from Trainer's ``on_train_begin`` to ``on_epoch_end`` (a callback), i.e. the
  training steps only. theta's per-epoch evaluation, its epoch checkpoint (Trainer's save + rename +
  theta_best) and the final ``theta_final`` save are timed separately (``eval s``, ``ckpt s``,
  ``final save s``), as is ``prepare_run`` (data checks, model load, tokenization).
* tokens: every collated training batch is counted by a thin wrapper around the recipe's collator
  (which also times it): positions computed, real positions (attention mask; a packed row has no
  padding), label positions. **tok/s** = real tokens / epoch s; **ans tok/s** = answer tokens (the
  tokens of ``" {answer}"`` plus EOS, the same count for every recipe) / epoch s; **pad %** = padding
  share of the positions computed.
* **peak MB**: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the worker (whole process: model,
  data, optimizer, activations); on CUDA ``torch.cuda.max_memory_allocated``.
* **train loss**: Trainer's mean training loss over the epoch, and the last logged value. What it
  averages over differs: every real token (pad512), every real token except EOS (dynamic, grouped),
  answer tokens only (theta). **val ans loss** is comparable across recipes: after training, the
  mean loss over the answer tokens (answer + EOS) of the bundled validation file (60 examples),
  computed the same way for every recipe, outside the timed epoch.
* **MFU** = 6 x parameters x real tokens/s / peak, where peak is this machine's fp32 matmul rate
  measured in the same invocation (best of 10 ``torch.mm`` on 2048 x 2048 fp32, torch's default
  thread count; bf16-free). Parameters are counted once (the LM head is tied to the embedding), the
  attention score FLOPs are ignored, and padding positions count as wasted work, not as tokens.

Data: the 336 records of the shipped sample data ``theta_sample_train.json`` (see
``theta_ai.config.samples``) three times over (1,008 examples, the real length distribution), except
that in the third copy every 4th record's answer is followed by the next record's answer
("\\n\\n"-joined): 84 longer examples, a tail up to ~350 tokens like real data has.
Then a seeded shuffle; ``--examples N`` (and ``--quick``: 128) takes the first N.

Results go to ``benchmarks/results/train_throughput.json`` (git-ignored) and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from theta_ai.config.samples import sample_path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_FILE = sample_path("theta_sample_train.json")
VAL_FILE = sample_path("theta_sample_val.json")
TOKENIZER_DIR = ROOT.parent / "shared" / "tokenizers" / "gpt2"  # ../shared beside the repository
RESULTS = ROOT / "benchmarks" / "results" / "train_throughput.json"
RECIPES = ("pad512", "dynamic", "grouped", "theta", "theta-packed")
SEED = 42
# The origin's recipe (theta-train's defaults), shared by every recipe.
HPARAMS = dict(batch_size=4, grad_accum=4, learning_rate=5e-5, warmup_steps=500, weight_decay=0.01,
               logging_steps=10, max_len=512)


# ---------------------------------------------------------------------------- setup (parent process)


def extended_records(n: int | None, seed: int = SEED) -> list[dict]:
    """The sample set x3 (third copy: every 4th answer joined with the next), shuffled, first ``n``."""
    base = json.loads(TRAIN_FILE.read_text(encoding="utf-8"))
    records = [dict(r) for r in base] + [dict(r) for r in base]
    for i, r in enumerate(base):
        r = dict(r)
        if i % 4 == 0:
            r["answer"] = r["answer"] + "\n\n" + base[(i + 1) % len(base)]["answer"]
        records.append(r)
    random.Random(seed).shuffle(records)
    return records[:n] if n else records


def build_model_folder(folder: Path, size: str, seed: int = SEED) -> dict:
    """A seeded, freshly initialised GPT-2 plus the GPT-2 tokenizer (pad = eos), saved to ``folder``."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    tokenizer.pad_token = tokenizer.eos_token
    eos = tokenizer.eos_token_id
    if size == "small":
        config = GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=50257, n_positions=1024)
    else:  # 124m: GPT-2 small
        config = GPT2Config()
    config.bos_token_id = config.eos_token_id = config.pad_token_id = eos
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return {"size": size, "parameters": sum(p.numel() for p in model.parameters()),
            "n_layer": config.n_layer, "n_embd": config.n_embd, "n_head": config.n_head,
            "vocab_size": config.vocab_size, "n_positions": config.n_positions}


def matmul_peak_flops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of-``repeats`` fp32 ``torch.mm`` rate (FLOP/s) with torch's default thread count."""
    import torch

    if torch.cuda.is_available():
        a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
        sync = torch.cuda.synchronize
    else:
        a, b = torch.randn(n, n), torch.randn(n, n)
        sync = lambda: None  # noqa: E731
    torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def answer_token_count(records: list[dict], tokenizer_dir: Path) -> tuple[int, int]:
    """(answer tokens, all tokens) of the QA text, untruncated: `` {answer}`` + EOS, and the whole example."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    answers = total = 0
    for r in records:
        prompt = len(tok(f"Question: {r['question']}\nAnswer:")["input_ids"])
        full = len(tok(f"Question: {r['question']}\nAnswer: {r['answer']}")["input_ids"]) + 1
        total += min(full, HPARAMS["max_len"])
        answers += max(0, min(full, HPARAMS["max_len"]) - prompt)
    return answers, total


def machine_description() -> dict:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------------------- instrumentation (worker)


class CountingCollator:
    """Wraps a collator: times it and counts the positions of the training batches it builds."""

    def __init__(self, inner):
        self.inner = inner
        self.active = True  # switched off at the end of the epoch (evaluation batches are not counted)
        self.calls = self.positions = self.real = self.label_positions = 0
        self.seconds = 0.0

    def __call__(self, features):
        start = time.perf_counter()
        batch = self.inner(features)
        elapsed = time.perf_counter() - start
        if self.active:
            ids = batch["input_ids"]
            mask = batch.get("attention_mask")
            self.calls += 1
            self.seconds += elapsed
            self.positions += ids.numel()
            self.real += int(mask.sum()) if mask is not None else ids.numel()
            self.label_positions += int((batch["labels"] != -100).sum())
        return batch

    def __getattr__(self, name):  # anything Trainer asks of the collator goes to the real one
        return getattr(self.__dict__["inner"], name)

    def stats(self) -> dict:
        return {"collator_calls": self.calls, "collator_s": self.seconds, "positions": self.positions,
                "real_tokens": self.real, "label_positions": self.label_positions}


def count_lm_head_rows(model, counter: CountingCollator) -> dict:
    """Count the rows the output projection (LM head) computes during the training epoch, whatever the
    pipeline slices (``logits_to_keep``, label-only heads, ...): a forward hook on ``get_output_embeddings()``.
    Also splits the parameters into the LM head, embedding lookups (free) and the body, for the work estimate."""
    import torch

    found = {"rows": 0}
    head = model.get_output_embeddings()
    if head is not None:
        def hook(module, inputs, output):
            if counter.active:
                found["rows"] += inputs[0].shape[:-1].numel()

        head.register_forward_hook(hook)
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    head_params = head.weight.numel() if head is not None else 0
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    # body: every weight a token passes through except the embedding lookups and the LM head
    found.update(params=total, head_params=head_params, body_params=total - embeddings - (0 if tied else head_params),
                 tied=tied, hooked=head is not None)
    return found


def timing_callback(counter: CountingCollator | None):
    from transformers import TrainerCallback

    class Timing(TrainerCallback):
        def __init__(self):
            self.t: dict[str, float] = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.t["train_begin"] = time.perf_counter()
            self.t["cpu_begin"] = time.process_time()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.t.setdefault("epoch_end", time.perf_counter())
            self.t.setdefault("cpu_epoch_end", time.process_time())
            if counter is not None:
                counter.active = False

        def on_evaluate(self, args, state, control, **kwargs):
            self.t.setdefault("evaluated", time.perf_counter())

        def on_save(self, args, state, control, **kwargs):
            self.t.setdefault("saved", time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            self.t["train_end"] = time.perf_counter()
            self.state = state

        def phases(self) -> dict:
            t = self.t
            out = {"epoch_s": t["epoch_end"] - t["train_begin"], "epoch_cpu_s": t["cpu_epoch_end"] - t["cpu_begin"]}
            after = t["epoch_end"]
            if "evaluated" in t:
                out["eval_s"] = t["evaluated"] - after
                after = t["evaluated"]
            if "saved" in t:
                out["ckpt_s"] = t["saved"] - after
            return out

    return Timing()


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def val_answer_loss(model, tokenizer, batch_size: int = 16) -> float:
    """Mean loss over the answer tokens (answer + EOS) of the bundled validation file; same for every recipe."""
    import torch

    records = json.loads(VAL_FILE.read_text(encoding="utf-8"))
    rows = []
    for r in records:
        prompt = tokenizer(f"Question: {r['question']}\nAnswer:")["input_ids"]
        answer = tokenizer(f" {r['answer']}")["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + answer)[: HPARAMS["max_len"]]
        labels = ([-100] * len(prompt) + answer)[: HPARAMS["max_len"]]
        rows.append((ids, labels))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (x, y) in enumerate(chunk):
                ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = torch.tensor(x), torch.tensor(y), 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            shift_logits, shift_labels = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1).to(device)
            total += float(torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100,
                                                             reduction="sum"))
            count += int((shift_labels != -100).sum())
    model.train(was_training)
    return total / max(count, 1)


# ---------------------------------------------------------------------------- recipes (worker)


def plain_training_arguments(output_dir: Path, grouped: bool):
    import torch
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=1,
        per_device_train_batch_size=HPARAMS["batch_size"],
        gradient_accumulation_steps=HPARAMS["grad_accum"],
        learning_rate=HPARAMS["learning_rate"],
        warmup_steps=HPARAMS["warmup_steps"],
        weight_decay=HPARAMS["weight_decay"],
        seed=SEED,
        data_seed=SEED,
        fp16=cuda,  # the same precision theta-train's --precision auto picks
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=HPARAMS["logging_steps"],
        report_to="none",
        dataloader_pin_memory=cuda,
        train_sampling_strategy="group_by_length" if grouped else "random",
    )


def run_plain(recipe: str, model_dir: Path, data_file: Path, workdir: Path) -> dict:
    import datasets
    import torch
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
                              default_data_collator)

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    if torch.cuda.is_available():
        model = model.cuda()
    records = json.loads(data_file.read_text(encoding="utf-8"))
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}{tokenizer.eos_token}" for r in records]
    max_len = HPARAMS["max_len"]
    if recipe == "pad512":
        enc = tokenizer(texts, padding="max_length", max_length=max_len, truncation=True)
        enc["labels"] = [[t if m else -100 for t, m in zip(ids, mask)]
                         for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
        dataset = datasets.Dataset.from_dict(dict(enc))
        collator = default_data_collator
    else:
        enc = tokenizer(texts, truncation=True, max_length=max_len)
        dataset = datasets.Dataset.from_dict(dict(enc))
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    counter = CountingCollator(collator)
    head = count_lm_head_rows(model, counter)
    timing = timing_callback(counter)
    trainer = Trainer(model=model, args=plain_training_arguments(workdir / "out", recipe == "grouped"),
                      train_dataset=dataset, data_collator=counter, processing_class=tokenizer, callbacks=[timing])
    prepare_s = time.perf_counter() - start
    t = time.perf_counter()
    output = trainer.train()
    train_call_s = time.perf_counter() - t
    return {"prepare_s": prepare_s, "setup_s": timing.t["train_begin"] - t, "train_call_s": train_call_s, **timing.phases(), **counter.stats(),
            "optimizer_steps": trainer.state.global_step, "examples": len(dataset),
            "train_loss": output.metrics.get("train_loss"), "last_logged_loss": _last_loss(trainer.state),
            "loss_over": "all real tokens" if recipe == "pad512" else "all real tokens except EOS (pad id)",
            "train_runtime": output.metrics.get("train_runtime"),
            "val_answer_loss": val_answer_loss(trainer.model, tokenizer), "peak_mb": peak_memory_mb(),
            **_head_fields(head)}


def run_theta(recipe: str, model_dir: Path, data_file: Path, workdir: Path) -> dict:
    """The real theta-train path: resolve_config -> prepare_run -> theta_ai.training.run.train."""
    from theta_ai.training import run as training
    from theta_ai.config import resolve_config

    values = {"model_name": str(model_dir), "data": [str(data_file)], "val_data": [str(VAL_FILE)], "epochs": 1,
              "checkpoint_dir": str(workdir / "models"), "logdir": str(workdir / "logs"), "seed": SEED}
    if recipe == "theta-packed":
        values["packing"] = True
    cfg = resolve_config(values)
    # These match the shared HPARAMS only as long as theta's defaults are the origin's recipe; say so if not.
    drift = {k: (cfg.values[k], v) for k, v in (("batch_size", HPARAMS["batch_size"]), ("grad_accum", HPARAMS["grad_accum"]),
                                                ("learning_rate", HPARAMS["learning_rate"]),
                                                ("warmup_steps", HPARAMS["warmup_steps"]),
                                                ("weight_decay", HPARAMS["weight_decay"]),
                                                ("max_seq_length", HPARAMS["max_len"]))
             if cfg.values[k] != v}
    start = time.perf_counter()
    run = training.prepare_run(cfg)
    counter = CountingCollator(run.collator)
    run.collator = counter
    head = count_lm_head_rows(run.loaded.model, counter)
    prepare_s = time.perf_counter() - start

    timing = timing_callback(counter)
    t = time.perf_counter()
    if "callbacks" in inspect.signature(training.train).parameters:
        result = training.train(cfg, prepared=run, callbacks=[timing])
    else:  # an older train() without extra callbacks: add ours where the trainer is built
        original_build = training.build_trainer

        def build_trainer(*args, **kwargs):
            trainer = original_build(*args, **kwargs)
            trainer.add_callback(timing)
            return trainer

        training.build_trainer = build_trainer
        try:
            result = training.train(cfg, prepared=run)
        finally:
            training.build_trainer = original_build
    done = time.perf_counter()
    state = timing.state
    return {"prepare_s": prepare_s, "setup_s": timing.t["train_begin"] - t,
            "train_call_s": timing.t["train_end"] - t, "final_save_s": done - timing.t["train_end"],
            **timing.phases(), **counter.stats(),
            "optimizer_steps": state.global_step, "examples": len(run.train_dataset),
            "train_loss": result.metrics.get("train_loss"), "last_logged_loss": _last_loss(state),
            "loss_over": "answer tokens (answer + EOS)" if not cfg.train_on_prompt else "all real tokens",
            "train_runtime": result.metrics.get("train_runtime"),
            "eval_loss": next((h["eval_loss"] for h in reversed(state.log_history) if "eval_loss" in h), None),
            "val_answer_loss": val_answer_loss(run.loaded.model, run.loaded.tokenizer), "peak_mb": peak_memory_mb(),
            "theta_notes": run.notes, "hparam_drift": drift, **_head_fields(head), "code": _code_version(),
            "theta_settings": {k: cfg.values[k] for k in ("template", "packing", "group_by_length", "precision",
                                                         "train_on_prompt", "max_seq_length")}}


def _head_fields(head: dict) -> dict:
    return {"lm_head_rows": head["rows"] if head["hooked"] else None, "params": head["params"],
            "head_params": head["head_params"], "body_params": head["body_params"], "tied_head": head["tied"]}


def _code_version() -> dict:
    """theta_ai's git commit and whether src/ differs from it (other people edit src/ while benchmarks run)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {"commit": git("rev-parse", "--short", "HEAD"), "src_modified": bool(git("status", "--porcelain", "src"))}


def _last_loss(state):
    return next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)


def worker(args) -> int:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.worker.startswith("theta"):
            out = run_theta(args.worker, Path(args.model_dir), Path(args.data_file), workdir)
        else:
            out = run_plain(args.worker, Path(args.model_dir), Path(args.data_file), workdir)
        out["ok"] = True
    except Exception as exc:  # reported in the table, the other recipes still run
        import traceback

        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    out.update(recipe=args.worker, torch_threads=torch.get_num_threads(), pid=os.getpid())
    Path(args.json_out).write_text(json.dumps(out, indent=2, default=str))
    return 0 if out["ok"] else 1


# ---------------------------------------------------------------------------- report (parent)


def summarize(runs: list[dict], params: int, peak: float, answer_tokens: int) -> dict:
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        return {"ok": False, "error": runs[0].get("error") if runs else "not run"}

    def med(key):
        vals = [r[key] for r in ok if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    epoch = med("epoch_s")
    real = ok[0]["real_tokens"]
    rows = ok[0].get("lm_head_rows")
    work = (6 * (ok[0]["body_params"] * ok[0]["positions"] + ok[0]["head_params"] * rows)
            if rows is not None and ok[0].get("body_params") is not None else None)
    summary = {"ok": True, "runs": len(ok), "epoch_s": epoch, "epoch_s_all": [r["epoch_s"] for r in ok],
               "optimizer_steps": ok[0]["optimizer_steps"], "examples": ok[0]["examples"], "real_tokens": real,
               "positions": ok[0]["positions"], "answer_tokens": answer_tokens,
               "tokens_per_s": real / epoch, "answer_tokens_per_s": answer_tokens / epoch,
               "pad_fraction": 1 - real / ok[0]["positions"], "mfu": 6 * params * real / epoch / peak,
               "peak_mb": med("peak_mb"), "train_loss": med("train_loss"), "last_logged_loss": med("last_logged_loss"),
               "loss_over": ok[0]["loss_over"], "val_answer_loss": med("val_answer_loss"),
               "collator_s": med("collator_s"), "prepare_s": med("prepare_s"), "train_call_s": med("train_call_s"),
               "epoch_s_min": min(r["epoch_s"] for r in ok), "epoch_cpu_s": med("epoch_cpu_s"),
               "lm_head_rows": rows, "lm_head_fraction": rows / ok[0]["positions"] if rows is not None else None,
               "work_flop": work, "achieved_flops": work / epoch if work else None,
               "eval_s": med("eval_s"), "ckpt_s": med("ckpt_s"), "final_save_s": med("final_save_s"),
               "loadavg_1m": statistics.mean(x for r in ok for x in r.get("loadavg_1m", [])) if ok[0].get("loadavg_1m") else None}
    return summary


def fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def markdown_table(summaries: dict[str, dict], reference: str = "theta") -> str:
    ref = summaries.get(reference, {}).get("epoch_s") if summaries.get(reference, {}).get("ok") else None
    head = ("| recipe | epoch s | / theta | opt. steps | tok/s | ans tok/s | pad % | MFU % | LM-head rows % | "
            "work TFLOP | cpu s | peak MB | train loss (over) | val ans loss | collator s | eval s | ckpt s | "
            "final save s | load |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    over_short = {"all real tokens": "all", "all real tokens except EOS (pad id)": "all but EOS",
                  "answer tokens (answer + EOS)": "answers"}
    for name, s in summaries.items():
        if not s.get("ok"):
            rows.append(f"| `{name}` | failed: {s.get('error', '?')[:120]} |" + " |" * 18)
            continue
        ratio = s["epoch_s"] / ref if ref else None
        rows.append(
            f"| `{name}` | {s['epoch_s']:.1f} | {fmt(ratio, '.2f')} | {s['optimizer_steps']} | {s['tokens_per_s']:.0f} | "
            f"{s['answer_tokens_per_s']:.0f} | {100 * s['pad_fraction']:.1f} | {100 * s['mfu']:.1f} | "
            f"{fmt(s['lm_head_fraction'] and 100 * s['lm_head_fraction'], '.0f')} | "
            f"{fmt(s['work_flop'] and s['work_flop'] / 1e12, '.2f')} | {fmt(s['epoch_cpu_s'], '.0f')} | {s['peak_mb']:.0f} | "
            f"{fmt(s['train_loss'], '.3f')} ({over_short.get(s['loss_over'], s['loss_over'])}) | "
            f"{fmt(s['val_answer_loss'], '.3f')} | {fmt(s['collator_s'], '.2f')} | {fmt(s['eval_s'], '.1f')} | "
            f"{fmt(s['ckpt_s'], '.1f')} | {fmt(s['final_save_s'], '.1f')} | {fmt(s['loadavg_1m'], '.1f')} |")
    return head + "\n".join(rows) + "\n"


def parent(args) -> int:
    recipes = args.recipes
    n_examples = args.examples or (128 if args.quick else None)
    out_path = Path(args.out)
    with contextlib.ExitStack() as stack:
        if args.keep_dir:  # a kept folder: finished runs are reused when the same command is run again
            tmp = Path(args.keep_dir)
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="theta-throughput-")))
        records = extended_records(n_examples)
        data_file = tmp / "train.json"
        model_dir = tmp / "model"
        meta_file = tmp / "meta.json"
        meta = {"model_size": args.model_size, "examples": len(records), "seed": SEED, "hparams": HPARAMS}
        if meta_file.is_file():
            kept = json.loads(meta_file.read_text())
            kept_meta = {k: kept.get(k) for k in meta}
            if kept_meta != json.loads(json.dumps(meta)):
                raise SystemExit(f"--keep-dir {tmp}: holds runs of other settings ({kept_meta}); use another folder")
            model_info = kept["model_info"]
            print(f"reusing the model, data and finished runs in {tmp}", flush=True)
        else:
            data_file.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
            model_info = build_model_folder(model_dir, args.model_size)
            meta_file.write_text(json.dumps({**meta, "model_info": model_info}, indent=2))
        answer_tokens, text_tokens = answer_token_count(records, model_dir)
        machine = machine_description()
        code_start = _code_version()
        peaks = [matmul_peak_flops()]
        print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
              f"({machine['torch_threads']} threads); fp32 matmul peak {peaks[0] / 1e9:.1f} GFLOP/s", flush=True)
        print(f"model: GPT-2 {args.model_size} ({model_info['parameters'] / 1e6:.2f}M parameters); data: {len(records)} "
              f"examples, {text_tokens} tokens, {answer_tokens} answer tokens", flush=True)
        runs: dict[str, list[dict]] = {r: [] for r in recipes}
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        for rep in range(args.repeats):
            for recipe in recipes:
                workdir = tmp / f"{recipe}-{rep}"
                json_out = tmp / f"{recipe}-{rep}.json"
                done_file = tmp / f"{recipe}-{rep}.done.json"
                if done_file.is_file():  # finished in an earlier invocation with --keep-dir
                    result = json.loads(done_file.read_text())
                    runs[recipe].append(result)
                    print(f"[{rep + 1}/{args.repeats}] {recipe:<13} epoch {result.get('epoch_s', float('nan')):.1f} s "
                          f"(kept from an earlier invocation)", flush=True)
                    continue
                cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", recipe, "--json-out", str(json_out),
                       "--model-dir", str(model_dir), "--data-file", str(data_file), "--workdir", str(workdir)]
                loads = [os.getloadavg()[0]]
                t = time.perf_counter()
                with open(tmp / f"{recipe}-{rep}.log", "w") as log:
                    proc = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)
                    while proc.poll() is None:  # sample the load while the worker runs
                        time.sleep(2)
                        loads.append(os.getloadavg()[0])
                wall = time.perf_counter() - t
                if json_out.is_file():
                    result = json.loads(json_out.read_text())
                else:
                    tail = (tmp / f"{recipe}-{rep}.log").read_text(errors="replace")[-2000:]
                    result = {"ok": False, "error": f"worker exited {proc.returncode}: {tail}"}
                result["subprocess_wall_s"] = wall
                # 1-minute load average sampled while the worker ran: the worker alone makes ~1 per thread
                # it keeps busy; more means other processes shared the CPU during the measurement.
                result["loadavg_1m"] = loads
                result["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
                if result.get("ok"):
                    done_file.write_text(json.dumps(result, indent=2, default=str))
                runs[recipe].append(result)
                status = (f"epoch {result['epoch_s']:.1f} s, {result['optimizer_steps']} steps" if result.get("ok")
                          else f"FAILED: {result.get('error')}")
                print(f"[{rep + 1}/{args.repeats}] {recipe:<13} {status} (subprocess {wall:.0f} s, "
                      f"load avg {statistics.mean(loads):.1f}, max {max(loads):.1f})", flush=True)
        peaks.append(matmul_peak_flops())
        peak = max(peaks)
        summaries = {r: summarize(runs[r], model_info["parameters"], peak, answer_tokens) for r in recipes}
    table = markdown_table(summaries)
    report = {"machine": machine, "matmul_peak_flops": peak, "matmul_peak_runs": peaks, "model": model_info,
              "data": {"examples": len(records), "tokens": text_tokens, "answer_tokens": answer_tokens,
                       "source": f"sample:{TRAIN_FILE.name}", "quick": args.quick},
              "code": {"start": code_start, "end": _code_version()},
              "hparams": HPARAMS, "seed": SEED, "repeats": args.repeats, "order": "interleaved",
              "summaries": summaries, "runs": runs, "table": table}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2, default=str))
    print()
    print(f"GPT-2 {args.model_size} ({model_info['parameters'] / 1e6:.2f}M), {len(records)} examples, effective batch "
          f"{HPARAMS['batch_size'] * HPARAMS['grad_accum']}, 1 epoch, {args.repeats} repeat(s) (median); "
          f"MFU against {peak / 1e9:.1f} GFLOP/s fp32 matmul peak")
    print(table)
    print(f"written to {out_path}")
    return 0 if all(s.get("ok") for s in summaries.values()) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES), help="recipes to run, in this order")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds (A B C ... A B C ...); median is reported")
    p.add_argument("--model-size", choices=("small", "124m"), default="small",
                   help="small: 4 layers, 256 wide, 4 heads (default); 124m: GPT-2 small")
    p.add_argument("--examples", type=int, default=None, help="use the first N examples of the extended set")
    p.add_argument("--quick", action="store_true", help="128 examples: a smoke test")
    p.add_argument("--out", default=str(RESULTS), help="JSON results file")
    p.add_argument("--keep-dir", help="keep the model, data and each finished run in this folder; running the same "
                                      "command again skips the finished runs (for machines where runs get killed)")
    # worker mode (internal)
    p.add_argument("--worker", choices=RECIPES, help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--data-file", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
