"""The one option table: every theta-train flag, YAML key, default, help text and the README table.

The CLI flags, their help, the YAML keys and the README table are all generated from :data:`OPTIONS`;
presets (:mod:`theta_ai.config.presets`) list only what they change.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from theta_ai.config.presets import PRESETS
from theta_ai.errors import ConfigError


@dataclass(frozen=True)
class Option:
    name: str
    type: Any
    default: Any
    help: str
    group: str
    flag: str | None = None  # defaults to --name-with-dashes
    choices: tuple | None = None
    repeatable: bool = False
    metavar: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {v!r}")


def _keep_limit(v: Any) -> int:
    """``--save-total-limit``: a positive count, or ``all`` (stored as 0: keep every epoch checkpoint)."""
    if isinstance(v, str) and v.strip().lower() == "all":
        return 0
    if isinstance(v, bool) or int(v) != float(v) or int(v) < 0:
        raise ValueError(f"expected a whole number of checkpoints or 'all', got {v!r}")
    return int(v)


_keep_limit.__name__ = "number of checkpoints (or all)"

# Groups, in the order --help shows them.
DATA, MODEL, TRAINING, ENHANCED, CHECKPOINTS, RUN = "data", "model", "training", "enhanced", "checkpoints", "run"
SCHEDULERS = ("linear", "cosine", "cosine-restarts", "plateau", "constant")

OPTIONS: tuple[Option, ...] = (
    # ---- data
    Option("data", str, [], "training data: file, folder or saved dataset (repeatable)", DATA, repeatable=True, metavar="PATH"),
    Option("val_data", str, [], "validation data (repeatable); without it --val-split is used", DATA, repeatable=True, metavar="PATH"),
    Option("val_split", float, 0.1, "fraction of the training data held out for validation (seeded)", DATA),
    Option("skip_invalid", _bool, False, "skip bad records/files with a summary instead of stopping", DATA),
    Option("template", str, "auto", "prompt format: chat template if the tokenizer has one (auto), Question/Answer (qa), or chat", DATA, choices=("auto", "qa", "chat")),
    Option("max_seq_length", int, 512, "longest example in tokens; longer ones are cut with a counted warning", DATA),
    Option("train_on_prompt", _bool, False, "compute the loss on prompt tokens too (default: answers only)", DATA),
    Option("packing", _bool, False, "pack several examples into one row (refused where the model would mix them)", DATA),
    Option("group_by_length", _bool, True, "batch examples of similar length together (less padding)", DATA),
    # ---- model
    Option("model_name", str, "gpt2", "hub id, local model folder, or theta-tiny (offline, built-in)", MODEL),
    Option("trust_remote_code", _bool, False, "allow model code from the model folder/hub (off unless you trust it)", MODEL),
    Option("load_checkpoint", str, None, "start a new fine-tuning run from this checkpoint's weights (fresh optimizer)", MODEL, metavar="PATH"),
    Option("lora", _bool, False, "train LoRA adapters (peft) instead of all weights; checkpoints then hold the adapter", MODEL),
    Option("lora_r", int, 8, "LoRA rank", MODEL),
    Option("lora_alpha", int, 16, "LoRA scaling numerator (the update is scaled by alpha / r)", MODEL),
    Option("lora_dropout", float, 0.05, "dropout on the LoRA branch", MODEL),
    Option("lora_target_modules", str, None, "comma-separated module names; default: the architecture's attention and "
           "MLP projections (GPT-2 c_attn,c_proj,c_fc; Llama q/k/v/o and gate/up/down)", MODEL, metavar="NAMES"),
    # ---- training
    Option("epochs", float, 100.0, "number of training epochs", TRAINING),
    Option("batch_size", int, 4, "per-device batch size", TRAINING),
    Option("grad_accum", int, 4, "gradient accumulation steps", TRAINING),
    Option("learning_rate", float, 5e-5, "peak learning rate", TRAINING),
    Option("warmup_steps", int, 500, "linear warmup steps", TRAINING),
    Option("weight_decay", float, 0.01, "AdamW weight decay", TRAINING),
    Option("precision", str, "auto", "auto = fp16 on CUDA, fp32 on CPU; bf16 where the card supports it", TRAINING, choices=("auto", "fp16", "bf16", "fp32")),
    Option("gradient_checkpointing", _bool, False, "recompute activations in backward to save memory", TRAINING),
    Option("auto_batch_size", _bool, False, "on CUDA out of memory, halve --batch-size, double --grad-accum (same "
           "effective batch) and start again", TRAINING),
    Option("logging_steps", int, 10, "log training loss and learning rate every N optimizer steps", TRAINING),
    Option("seed", int, 42, "random seed (model init, data order, validation split)", TRAINING),
    # ---- enhanced training: augmentation, schedules, regularization, stopping, spike guard
    Option("augment", _bool, False, "augment training questions on the fly (seeded, different every epoch)", ENHANCED),
    Option("augment_config", str, None, "YAML file tuning the augmentation mix (see docs/enhanced_training.md)", ENHANCED, metavar="FILE.yaml"),
    Option("neftune_alpha", float, None, "NEFTune noise on token embeddings (Trainer's neftune_noise_alpha), e.g. 5", ENHANCED),
    Option("lr_scheduler", str, "linear", "learning-rate schedule after warmup", ENHANCED, choices=SCHEDULERS),
    Option("warmup_ratio", float, None, "warmup as a fraction of all steps (instead of --warmup-steps)", ENHANCED),
    Option("lr_cycles", int, 3, "cosine-restarts: number of hard restarts over the run", ENHANCED),
    Option("lr_factor", float, 0.5, "plateau: multiply the learning rate by this when validation loss stalls", ENHANCED),
    Option("lr_patience", int, 2, "plateau: evaluations without improvement before lowering the learning rate", ENHANCED),
    Option("dropout", float, None, "override the model's dropout probabilities (residual, embedding, attention)", ENHANCED),
    Option("label_smoothing", float, 0.0, "label smoothing factor for the loss", ENHANCED),
    Option("early_stopping_patience", int, None, "stop after N evaluations without improvement (theta_best is kept)", ENHANCED, metavar="N"),
    Option("spike_guard", _bool, False, "roll back to the best weights when validation loss spikes or training loss is NaN", ENHANCED),
    Option("spike_factor", float, 1.5, "spike guard: a validation loss above best x this is a spike", ENHANCED),
    Option("spike_lr_factor", float, 0.5, "spike guard: multiply the learning rate by this after a rollback", ENHANCED),
    Option("spike_max_rollbacks", int, 3, "spike guard: stop cleanly after this many rollbacks", ENHANCED),
    # ---- checkpoints
    Option("checkpoint_dir", str, "models", "where theta_checkpoint_epoch_N, theta_best and theta_final go", CHECKPOINTS, metavar="DIR"),
    Option("save_total_limit", _keep_limit, 3, "keep the newest N epoch checkpoints, or all (theta_best and "
           "theta_final are always kept; the banner shows the disk the run needs)", CHECKPOINTS, metavar="N|all"),
    Option("resume", str, None, "continue an interrupted run: auto (newest complete checkpoint) or PATH", CHECKPOINTS, metavar="auto|PATH"),
    Option("metric_for_best", str, "eval_loss", "validation metric that picks theta_best (lower is better for loss)", CHECKPOINTS),
    # ---- run
    Option("logdir", str, "logs", "TensorBoard and text logs root; each run gets its own sub-folder", RUN, metavar="DIR"),
    Option("grad_log_steps", int, 50, "log per-layer-group gradient norms every N optimizer steps (0 = off)", RUN, metavar="N"),
    Option("histogram_steps", int, 0, "write gradient and weight histograms every N optimizer steps (0 = off)", RUN, metavar="N"),
    Option("generation_eval", int, 8, "at each evaluation, answer N fixed validation questions: ROUGE-L/BLEU/EM scalars "
           "and example predictions in TensorBoard (0 = off; needed for --metric-for-best rougeL)", RUN, metavar="N"),
    Option("plan", _bool, False, "print the estimated peak GPU memory and the fastest settings that fit --gpu-memory, "
           "then exit (loads no data, allocates nothing)", RUN),
    Option("gpu_memory", str, None, "target GPU memory for --plan: 12GiB (the RTX 3060, default), 12GB = 10^9 bytes, 8000MB", RUN, metavar="SIZE"),
    Option("dry_run", _bool, False, "load and check everything, print the plan and one formatted example, then exit", RUN),
    Option("distributed", _bool, False, "accepted for torch.distributed.launch compatibility; the launcher's environment decides", RUN),
)
OPTION_BY_NAME = {o.name: o for o in OPTIONS}
BOOL_OPTIONS = {o.name for o in OPTIONS if o.type is _bool}


def closest(name: str, candidates) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _coerce(option: Option, value: Any, origin: str) -> Any:
    if value is None:
        return None
    try:
        if option.repeatable:
            items = value if isinstance(value, list) else [value]
            return [str(v) for v in items]
        if option.type is float and isinstance(value, str):
            value = float(value)
        converted = option.type(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {option.name} = {value!r} is not a valid {getattr(option.type, '__name__', 'value')} ({exc})") from None
    if option.choices and converted not in option.choices:
        raise ConfigError(f"{origin}: {option.name} = {converted!r}; choose one of {', '.join(option.choices)}")
    return converted


def options_table_markdown() -> str:
    """The README table of options with each preset's value (generated, so it cannot disagree)."""
    names = list(PRESETS)
    head = "| flag | " + " | ".join(f"`{n}`" for n in names) + " | meaning |\n|---|" + "---|" * len(names) + "---|\n"
    rows = []
    for option in OPTIONS:
        cells = []
        for name in names:
            value = PRESETS[name].get(option.name, option.default)
            cells.append(_cell(value))
        rows.append(f"| `{option.cli_flag}` | " + " | ".join(cells) + f" | {option.help} |")
    return head + "\n".join(rows) + "\n"


def _cell(value: Any) -> str:
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"`{value}`" if isinstance(value, str) else f"{value:g}" if isinstance(value, float) else str(value)


README_TABLE_START = "<!-- options-table:start (generated by theta_ai.config.options_table_markdown) -->"
README_TABLE_END = "<!-- options-table:end -->"


def write_readme_table(path: str | Path = "README.md") -> None:
    """Regenerate the options table in README.md between its markers (run after changing OPTIONS or PRESETS)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(README_TABLE_START, 1)
    _, tail = rest.split(README_TABLE_END, 1)
    path.write_text(f"{head}{README_TABLE_START}\n{options_table_markdown()}{README_TABLE_END}{tail}", encoding="utf-8")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_memory(text: str | int | float) -> int:
    """``"12GB"`` -> 12 x 10^9 bytes; ``"12GiB"`` / ``"12Gi"`` -> 12 x 2^30; ``"11.5G"``, ``"12000MB"``; a bare
    number is bytes. GB/G are decimal, GiB/Gi binary (an RTX 3060's "12 GB" is 12 GiB: pass ``12GiB``)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _SIZE.match(str(text))
        if not match or (match.group(3) and not match.group(2)):
            raise ConfigError(f"--gpu-memory {text!r}: expected a size such as 12GB, 12GiB, 11.5G or 12000MB "
                              f"(GB = 10^9 bytes, GiB = 2^30 bytes)")
        number, unit, binary = float(match.group(1)), match.group(2).lower(), bool(match.group(3))
        power = "kmgt".index(unit) + 1 if unit else 0
        value = number * (1024 if binary else 1000) ** power
    if value < 1:
        raise ConfigError(f"--gpu-memory {text!r}: the memory must be positive")
    return int(value)
