"""Configuration: every theta-train option in one table, the presets, and the merge.

Order of precedence (later wins): **preset -> ``--config FILE.yaml`` -> command-line flags**.
The option table :data:`OPTIONS` is the one source of truth: the CLI flags, their help, the
YAML keys and the README table are all generated from it. Presets live in
:mod:`theta_ai.presets`, each overridden value with its reason.

A YAML config holds the same keys as the flags (``batch_size`` or ``batch-size``), plus an
optional ``training_args:`` mapping of raw ``transformers.TrainingArguments`` fields for
anything theta_ai does not expose. Unknown keys are errors that name the closest valid key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .presets import DEFAULT_PRESET, PRESETS


class ConfigError(ValueError):
    """A bad preset name, config file, key or value; the message says how to fix it."""


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


@dataclass
class ThetaConfig:
    """The resolved configuration of one run: every option plus raw TrainingArguments overrides."""

    preset: str = DEFAULT_PRESET
    config_file: str | None = None
    training_args: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def as_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "config_file": self.config_file, **self.values,
                "training_args": dict(self.training_args)}


LOSS_METRICS = ("eval_loss", "eval_perplexity")  # lower is better; every other metric: higher is better


def metric_key(name: str) -> str:
    """Trainer's name for an evaluation metric: ``rougeL`` -> ``eval_rougeL``."""
    return name if name.startswith("eval_") else f"eval_{name}"


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


def _check_training_args(mapping: dict, origin: str) -> dict:
    from transformers import TrainingArguments  # only when a config actually uses the escape hatch

    known = {f.name for f in fields(TrainingArguments)}
    for key in mapping:
        if key not in known:
            raise ConfigError(f"{origin}: training_args.{key} is not a TrainingArguments field{closest(key, known)}")
    return dict(mapping)


def safe_load_yaml(path: str | Path, missing: str, error: type[ConfigError] = ConfigError) -> Any:
    """``yaml.safe_load`` of a file; a missing file, bad YAML (with line and column) or bad encoding is ``error``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(missing)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text; re-save it as UTF-8") from None


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config with ``yaml.safe_load``; returns option values plus ``training_args``."""
    path = Path(path)
    data = safe_load_yaml(path, f"--config {path}: no such file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of option: value, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key == "training_args":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: training_args must be a mapping of TrainingArguments fields")
            out["training_args"] = _check_training_args(value, str(path))
        elif key == "preset":
            out["preset"] = value
        elif key in OPTION_BY_NAME:
            out[key] = _coerce(OPTION_BY_NAME[key], value, str(path))
        else:
            raise ConfigError(f"{path}: unknown key {raw_key!r}{closest(key, [*OPTION_BY_NAME, 'training_args', 'preset'])}")
    return out


def resolve_config(cli_values: dict[str, Any] | None = None, preset: str | None = None,
                   config_file: str | None = None) -> ThetaConfig:
    """Merge defaults, the preset, a YAML file and explicit CLI values into a :class:`ThetaConfig`.

    ``cli_values`` holds only the options the user actually gave (argparse with SUPPRESS defaults).
    A ``preset:`` key inside the YAML file is used when no ``--preset`` flag is given.
    """
    cli_values = dict(cli_values or {})
    yaml_values = read_yaml_config(config_file) if config_file else {}
    preset_name = preset or yaml_values.pop("preset", None) or DEFAULT_PRESET
    yaml_values.pop("preset", None)
    if preset_name not in PRESETS:
        raise ConfigError(f"unknown preset {preset_name!r}{closest(preset_name, PRESETS)} "
                          f"(presets: {', '.join(PRESETS)})")
    cfg = ThetaConfig(preset=preset_name, config_file=str(config_file) if config_file else None)
    for option in OPTIONS:
        cfg.values[option.name] = list(option.default) if option.repeatable else option.default
        cfg.sources[option.name] = "default"
    layers = [(f"preset {preset_name}", PRESETS[preset_name]), (f"config {config_file}", yaml_values),
              ("command line", cli_values)]
    for origin, layer in layers:
        for key, value in layer.items():
            if key == "training_args":
                cfg.training_args.update(value)
                continue
            if key not in OPTION_BY_NAME:
                raise ConfigError(f"{origin}: unknown option {key!r}{closest(key, OPTION_BY_NAME)}")
            cfg.values[key] = _coerce(OPTION_BY_NAME[key], value, origin)
            cfg.sources[key] = origin
    from .sample_data import resolve_sample_paths  # sample:NAME -> the sample data shipped inside the package

    for name in ("data", "val_data"):
        origin = f"{OPTION_BY_NAME[name].cli_flag} (from {cfg.sources[name]})"
        cfg.values[name] = resolve_sample_paths(cfg.values[name], origin)
    _check_values(cfg)
    return cfg


def _check_values(cfg: ThetaConfig) -> None:
    positive = ("epochs", "batch_size", "grad_accum", "max_seq_length", "logging_steps")
    for name in positive:
        if cfg.values[name] is None or cfg.values[name] <= 0:
            raise ConfigError(f"{name} must be positive, got {cfg.values[name]!r} (from {cfg.sources[name]})")
    for name in ("learning_rate", "weight_decay", "warmup_steps"):
        if cfg.values[name] < 0:
            raise ConfigError(f"{name} must not be negative, got {cfg.values[name]!r} (from {cfg.sources[name]})")
    if not 0 < cfg.values["val_split"] < 1:
        raise ConfigError(f"val_split must be between 0 and 1, got {cfg.values['val_split']!r}")
    for name in ("dropout", "label_smoothing", "warmup_ratio"):
        value = cfg.values[name]
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value!r} (from {cfg.sources[name]})")
    for name in ("spike_lr_factor", "lr_factor"):
        if not 0 < cfg.values[name] < 1:
            raise ConfigError(f"{name} must be between 0 and 1, got {cfg.values[name]!r} (from {cfg.sources[name]})")
    if cfg.values["spike_factor"] <= 1:
        raise ConfigError(f"spike_factor must be above 1, got {cfg.values['spike_factor']!r}")
    metric = metric_key(cfg.values["metric_for_best"])
    if metric not in LOSS_METRICS + ("eval_token_accuracy",) and not cfg.values["generation_eval"]:
        raise ConfigError(f"--metric-for-best {cfg.values['metric_for_best']} needs generated answers; "
                          "set --generation-eval N (e.g. 32) or use eval_loss")
    if cfg.values["gpu_memory"] is not None:
        from .planner import parse_memory

        parse_memory(cfg.values["gpu_memory"])
    if cfg.values["save_total_limit"] is None:
        cfg.values["save_total_limit"] = 0  # YAML "save_total_limit: null": keep every epoch checkpoint


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
