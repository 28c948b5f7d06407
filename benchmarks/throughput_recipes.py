"""What ``train_throughput.py`` trains and how it measures it: the models, the two data sets, the recipes a
worker subprocess runs, and the instruments (collator counter, step clock, peak memory, validation loss).

``train_throughput.py`` (the command, the loop over runs, the report) imports this module; its docstring says
what every recipe does and what every column means.
"""

from __future__ import annotations

import json
import random
import resource
import sys
import time
from pathlib import Path

from theta_ai.config.samples import sample_path
from theta_ai.training.onednn_cache import CACHE_VARIABLES

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = ROOT.parent / "shared" / "tokenizers"  # ../shared beside the repository
TRAIN_FILE = sample_path("theta_sample_train.json")
VAL_FILE = sample_path("theta_sample_val.json")
SEED = 42
# theta-train's defaults (the origin's recipe), shared by every recipe; run_theta reports any drift.
HPARAMS = dict(batch_size=4, grad_accum=4, learning_rate=5e-5, warmup_steps=500, weight_decay=0.01,
               logging_steps=10, max_len=512)
MODELS = ("gpt2", "qwen3")  # the default matrix; also "gpt2-124m" (--models gpt2-124m)
TOKENIZER_OF = {"gpt2-124m": "gpt2"}  # a model name that is not a folder of ../shared/tokenizers
DATASETS = ("bundled", "long")  # the default matrix; also "long512" (--datasets long512)
ALL_DATASETS = (*DATASETS, "long512")
LONG_PARTS = 3  # answers of the long set: this many bundled answers, "\n\n"-joined
PARTS = {"long": LONG_PARTS, "long512": 10}  # long512: ~600 tokens, cut at max length 512 (the memory target's)
VAL_ROWS = 24  # validation records of the loss after training (the same rows for every recipe)
THETA_VAL_ROWS = 8  # validation records of theta's own per-epoch evaluation (after the timed epoch)
# What each theta recipe changes on top of theta-train's defaults (resolve_config option names).
THETA_OPTIONS = {"theta": {}, "theta-packed": {"packing": True}, "theta-chunked": {"chunked_loss": "on"},
                 "theta-unchunked": {"chunked_loss": "off"}, "theta-bf16": {"precision": "bf16"},
                 "theta-fp32": {"precision": "fp32"}, "theta-compile": {"torch_compile": True},
                 "theta-reuse": {"reuse_host_memory": True}, "theta-onednn-1024": {},
                 "theta-onednn-128": {}, "theta-no-dropout": {"dropout": 0.0}}
# What a recipe's worker finds in its environment: oneDNN's kernel-cache sizes, which theta_ai then keeps (its own
# default, 1,024, and the 128 theta_ai set before it sized the caches to one micro-batch's kernels)
def kernel_cache_env(entries: int | str) -> dict[str, str]:
    """Both oneDNN kernel-cache capacities at ``entries``, as a worker's environment gives them to theta_ai."""
    return dict.fromkeys(CACHE_VARIABLES, str(entries))


RECIPE_ENV = {f"theta-onednn-{n}": kernel_cache_env(n) for n in (1024, 128)}
RECIPES = ("plain", *THETA_OPTIONS)


# ---------------------------------------------------------------------------- data and models (parent)


def _read(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def _joined(base: list[dict], i: int, stride: int = 1, parts: int = LONG_PARTS) -> dict:
    """Record ``i`` with its answer followed by ``parts - 1`` more bundled answers (``stride`` apart), "\n\n"-joined."""
    answers = [base[(i + k * stride) % len(base)]["answer"] for k in range(parts)]
    return {**base[i], "answer": "\n\n".join(answers)}


def train_records(dataset: str, n: int | None, seed: int = SEED) -> list[dict]:
    """The training set, shuffled with ``seed``, first ``n``.

    ``bundled``: the 336 sample records three times over, the third copy with every 4th answer followed by the next
    record's (1,008 examples, the real length distribution plus a tail up to ~350 tokens). ``long``: every sample
    question with LONG_PARTS answers joined (copy ``c`` joins answers ``c + 1`` records apart; as many copies as
    ``n`` needs). ``long512``: the same with 10 answers joined (400-700 tokens, most cut at 512).
    """
    base = _read(TRAIN_FILE)
    if dataset == "bundled":
        records = [dict(r) for r in base] + [dict(r) for r in base]
        records += [_joined(base, i, parts=2) if i % 4 == 0 else dict(r) for i, r in enumerate(base)]
    else:
        copies = max(1, -(-(n or len(base)) // len(base)))
        records = [_joined(base, i, stride=c + 1, parts=PARTS[dataset]) for c in range(copies)
                   for i in range(len(base))]
    random.Random(seed).shuffle(records)
    return records[:n] if n else records


def val_records(dataset: str) -> list[dict]:
    """The validation set: the first VAL_ROWS of the bundled validation file (paraphrased questions), their answers
    joined with the next records' for ``long``."""
    base = _read(VAL_FILE)
    rows = base if dataset == "bundled" else [_joined(base, i, parts=PARTS[dataset]) for i in range(len(base))]
    return rows[:VAL_ROWS]


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZERS / TOKENIZER_OF.get(model, model)))
    if tokenizer.pad_token is None:  # GPT-2: pad = eos, as theta_ai and run_clm do
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model_folder(folder: Path, model: str, seed: int = SEED) -> dict:
    """A seeded, freshly initialised model and its real tokenizer, saved to ``folder`` (every recipe loads it)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen3Config, Qwen3ForCausalLM

    tokenizer = load_tokenizer(model)
    if model == "gpt2":
        eos = tokenizer.eos_token_id
        config = GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=len(tokenizer), n_positions=1024,
                            bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
        cls, shape = GPT2LMHeadModel, "GPT-2, 4 layers, 256 wide, 4 heads"
    elif model == "gpt2-124m":  # GPT-2 small's shape: the MFU target
        eos = tokenizer.eos_token_id
        config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
        cls, shape = GPT2LMHeadModel, "GPT-2 small (124M), 12 layers, 768 wide, 12 heads"
    else:  # Qwen3 family: GQA, RMSNorm, SwiGLU, rotary; tied embeddings like Qwen3-0.6B
        config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=64, intermediate_size=768, max_position_embeddings=2048,
                             tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        cls, shape = Qwen3ForCausalLM, "Qwen3, 4 layers, 256 wide, 4 heads / 2 KV heads, MLP 768, tied head"
    torch.manual_seed(seed)
    net = cls(config)
    net.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return {"model": model, "shape": shape, "parameters": sum(p.numel() for p in net.parameters()),
            "vocab_size": config.vocab_size, "tokenizer": f"../shared/tokenizers/{TOKENIZER_OF.get(model, model)}",
            "chat_template": bool(getattr(tokenizer, "chat_template", None))}


def token_counts(records: list[dict], tokenizer) -> dict:
    """Tokens of the data as theta formats it (template auto): all, answer (+ turn end), and the answer share."""
    from theta_ai.data import Example, ExampleFormatter

    formatter = ExampleFormatter(tokenizer, "auto", HPARAMS["max_len"])
    _, stats = formatter.encode_all([Example.from_qa(r["question"], r["answer"]) for r in records])
    total = sum(stats.lengths)
    return {"template": formatter.template, "tokens": total, "answer_tokens": stats.answer_tokens,
            "answer_share": stats.answer_tokens / total, "truncated": stats.truncated}


def matmul_peak_flops(dtype: str = "fp32", n: int = 2048, repeats: int = 10, budget_s: float = 5.0) -> float:
    """Best-of-``repeats`` ``torch.mm`` rate (FLOP/s) of ``n x n`` matrices in ``dtype``, torch's thread count.

    A CPU without bf16 instructions emulates bf16 matmul at ~1 GFLOP/s (one 2048 x 2048 product: ~15 s), so the
    size halves until one product takes under a second and the repeats stop once ``budget_s`` is spent.
    """
    import torch

    if not torch.cuda.is_available():
        kind = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        while n > 256:
            probe = torch.randn(n // 4, n // 4, dtype=kind)
            t = time.perf_counter()
            torch.mm(probe, probe)
            if (time.perf_counter() - t) * 64 < 1.0:  # the full n x n product: 64x the work
                break
            n //= 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a, b = torch.randn(n, n, device=device, dtype=kind), torch.randn(n, n, device=device, dtype=kind)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.mm(a, b)
    sync()
    best = float("inf")
    started = time.perf_counter()
    for _ in range(repeats):
        if time.perf_counter() - started > budget_s:
            break
        t = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


# ---------------------------------------------------------------------------- instruments (worker)


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
        if self.active:
            mask = batch.get("attention_mask")
            self.calls += 1
            self.seconds += time.perf_counter() - start
            self.positions += batch["input_ids"].numel()
            self.real += int(mask.sum()) if mask is not None else batch["input_ids"].numel()  # packed: no padding
            self.label_positions += int((batch["labels"] != -100).sum())
        return batch

    def __getattr__(self, name):  # anything Trainer asks of the collator goes to the real one
        return getattr(self.__dict__["inner"], name)

    def stats(self) -> dict:
        return {"collator_calls": self.calls, "collator_s": self.seconds, "positions": self.positions,
                "real_tokens": self.real, "label_positions": self.label_positions}


def peak_memory_mb() -> float:
    """Peak so far: ``max_memory_allocated`` on CUDA, else the process's peak RSS."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def step_clock(counter: CountingCollator):
    """A TrainerCallback timing the epoch (``on_train_begin`` -> ``on_epoch_end``) and each optimizer step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.begin = self.end = None
            self.steps: list[float] = []
            self.peak_mb = self.evaluated = self.saved = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.end is None:
                self.steps.append(time.perf_counter() - self.begin)

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.end is None:
                self.end = time.perf_counter() - self.begin
                self.peak_mb = peak_memory_mb()  # before the evaluation, the saves and our validation pass
                counter.active = False
            self.state = state

        def on_evaluate(self, args, state, control, **kwargs):  # theta's evaluation (loss + generated answers)
            self.evaluated = self.evaluated or time.perf_counter() - self.begin

        def on_save(self, args, state, control, **kwargs):  # theta's epoch checkpoint (+ theta_best)
            self.saved = self.saved or time.perf_counter() - self.begin

        def fields(self) -> dict:
            first = self.steps[0] if self.steps else None
            out = {"epoch_s": self.end, "step_end_s": self.steps, "first_step_s": first,
                   "later_steps_s": self.end - first if len(self.steps) > 1 else None, "peak_mb": self.peak_mb}
            if self.evaluated is not None:
                out["eval_s"] = self.evaluated - self.end
            if self.saved is not None:
                out["ckpt_s"] = self.saved - (self.evaluated or self.end)
            return out

    return StepClock()


def val_answer_loss(model, tokenizer, val_file: Path, batch_size: int = 4) -> float:
    """Mean loss per answer token (answer + the token closing its turn) over the validation file, in fp32, eval
    mode, rows tokenized by theta's formatter (template auto): the same rows and arithmetic for every recipe."""
    import torch
    from theta_ai.data import Example, ExampleFormatter

    formatter = ExampleFormatter(tokenizer, "auto", HPARAMS["max_len"])
    rows = [formatter.encode(Example.from_qa(r["question"], r["answer"])) for r in _read(val_file)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            width = max(r["length"] for r in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, r in enumerate(chunk):
                n = r["length"]
                ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            targets = labels[:, 1:].reshape(-1).to(device)
            total += float(torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets,
                                                             ignore_index=-100, reduction="sum"))
            count += int((targets != -100).sum())
    model.train(was_training)
    return total / max(count, 1)


def _result(clock, counter, state, train_loss, model, tokenizer, val_file: Path, **extra) -> dict:
    last = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
    t = time.perf_counter()
    loss = val_answer_loss(model, tokenizer, val_file)
    return {**clock.fields(), **counter.stats(), "optimizer_steps": state.global_step, "train_loss": train_loss,
            "last_logged_loss": last, "val_answer_loss": loss, "val_s": time.perf_counter() - t, **extra}


# ---------------------------------------------------------------------------- recipes (worker)


def plain_text(tokenizer, record: dict) -> str:
    """What ``plain`` trains on: the tokenizer's chat template over the exchange where it has one (Qwen3),
    else ``Question: {q}\\nAnswer: {a}<eos>`` (GPT-2): the text theta's template auto writes."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": record["question"]},
                                              {"role": "assistant", "content": record["answer"]}], tokenize=False)
    return f"Question: {record['question']}\nAnswer: {record['answer']}{tokenizer.eos_token}"


def run_plain(model_dir: Path, data_file: Path, val_file: Path, workdir: Path, hp: dict) -> dict:
    """Plain transformers.Trainer, the best plain recipe: per-batch padding + Trainer's length grouping, fp32."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer, \
        TrainingArguments

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    cuda = torch.cuda.is_available()
    texts = [plain_text(tokenizer, r) for r in _read(data_file)]
    dataset = datasets.Dataset.from_dict(dict(tokenizer(texts, truncation=True, max_length=hp["max_len"])))
    # labels = input_ids, the pad id masked: every token is trained, prompt and template included (and GPT-2's
    # EOS, which *is* its pad, is not); the run_clm recipe.
    counter = CountingCollator(DataCollatorForLanguageModeling(tokenizer, mlm=False))
    clock = step_clock(counter)
    args = TrainingArguments(
        output_dir=str(workdir / "out"), num_train_epochs=1, per_device_train_batch_size=hp["batch_size"],
        gradient_accumulation_steps=hp["grad_accum"], learning_rate=hp["learning_rate"],
        warmup_steps=hp["warmup_steps"], weight_decay=hp["weight_decay"], seed=SEED, data_seed=SEED,
        fp16=cuda,  # what theta's --precision auto picks on CUDA; on the CPU Trainer's default, fp32
        eval_strategy="no", save_strategy="no", logging_strategy="steps", logging_steps=hp["logging_steps"],
        report_to="none", dataloader_pin_memory=cuda, train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=counter,
                      processing_class=tokenizer, callbacks=[clock])
    prepare_s = time.perf_counter() - start
    output = trainer.train()
    return _result(clock, counter, trainer.state, output.metrics.get("train_loss"), model, tokenizer, val_file,
                   prepare_s=prepare_s, precision="fp16" if cuda else "fp32", examples=len(dataset),
                   loss_over="every token but the pad id (prompt and template included)")


def run_theta(recipe: str, model_dir: Path, data_file: Path, val_file: Path, workdir: Path, hp: dict) -> dict:
    """theta-train's own path: resolve_config (defaults + THETA_OPTIONS[recipe]) -> prepare_run -> train."""
    from theta_ai.config import resolve_config
    from theta_ai.config.options import OPTION_BY_NAME
    from theta_ai.training import run as training

    # theta's per-epoch evaluation comes after the timed epoch; a few rows and no generated answers keep it short
    theta_val = workdir / "theta_val.json"
    theta_val.write_text(json.dumps(_read(val_file)[:THETA_VAL_ROWS], ensure_ascii=False), encoding="utf-8")
    values = {"model_name": str(model_dir), "data": [str(data_file)], "val_data": [str(theta_val)], "epochs": 1,
              "checkpoint_dir": str(workdir / "models"), "logdir": str(workdir / "logs"), "seed": SEED,
              "generation_eval": 0, **THETA_OPTIONS[recipe]}
    if hp["warmup_steps"] != HPARAMS["warmup_steps"]:  # --warmup-steps: the same for every recipe
        values["warmup_steps"] = hp["warmup_steps"]
    if "torch_compile" in values and "torch_compile" not in OPTION_BY_NAME:  # a theta_ai before --torch-compile
        values["training_args"] = {"torch_compile": values.pop("torch_compile")}
    cfg = resolve_config(values)
    drift = {k: (cfg.values[k], hp[h]) for k, h in (("batch_size", "batch_size"), ("grad_accum", "grad_accum"),
                                                    ("learning_rate", "learning_rate"), ("warmup_steps", "warmup_steps"),
                                                    ("weight_decay", "weight_decay"), ("max_seq_length", "max_len"))
             if cfg.values[k] != hp[h]}
    start = time.perf_counter()
    run = training.prepare_run(cfg)  # data checks, model load, tokenization, packing/chunked-loss proofs, bf16 probe
    counter = CountingCollator(run.collator)
    run.collator = counter
    prepare_s = time.perf_counter() - start
    clock = step_clock(counter)
    t = time.perf_counter()
    result = training.train(cfg, prepared=run, callbacks=[clock])
    after_s = time.perf_counter() - t - clock.end  # theta's evaluation, checkpoint and theta_final after the epoch
    args = run.training_args
    return _result(clock, counter, clock.state, result.metrics.get("train_loss"), run.loaded.model,
                   run.loaded.tokenizer, val_file, prepare_s=prepare_s, after_epoch_s=after_s, examples=len(run.train_dataset),
                   precision="fp16" if args.fp16 else "bf16" if args.bf16 else "fp32",
                   chunked_loss=run.chunked_loss, template=run.formatter.template, theta_notes=run.notes,
                   loss_over="answer tokens (answer + the token closing its turn)" if not cfg.train_on_prompt
                   else "every real token", hparam_drift=drift)
