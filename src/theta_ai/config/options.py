"""The one option table: every theta-train flag, YAML key, default, help text and the README table.

The table is the :class:`ThetaConfig` dataclass: one typed field per option, its help, group, choices and
metavar as field metadata. :data:`OPTIONS` is read from those fields, and the CLI flags, their help, the YAML
keys and the README table are generated from :data:`OPTIONS`; presets (:mod:`theta_ai.config.presets`) list
only what they change.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import MutableMapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from theta_ai.config.presets import DEFAULT_PRESET, PRESETS
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

TRACKERS = ("tensorboard", "wandb", "mlflow")


def _trackers(v: Any) -> str:
    """``--report-to``: a comma-separated list of :data:`TRACKERS`, or ``none``; stored normalised."""
    names = [n.strip().lower() for n in (v if isinstance(v, list) else str(v).split(",")) if n.strip()]
    if names == ["none"]:
        return "none"
    unknown = [n for n in names if n not in TRACKERS]
    if unknown or not names:
        raise ValueError(f"expected {', '.join(TRACKERS)} (comma-separated) or none, got {v!r}")
    return ",".join(dict.fromkeys(names))


_trackers.__name__ = "tracker list"


def _name_pairs(v: Any) -> str:
    """``--field-map`` / ``--role-map``: ``a=b,c=d`` text or a YAML mapping -> ``a=b,c=d`` (names: data/mapping.py)."""
    pairs = [(str(a).strip(), str(b).strip()) for a, b in v.items()] if isinstance(v, dict) else [
        tuple(s.strip() for s in p.partition("=")[::2]) for p in str(v).split(",") if p.strip()]
    if any(not a or not b or "=" in b for a, b in pairs):
        raise ValueError("write NAME=NAME pairs separated by commas, e.g. question=prompt,answer=response")
    return ",".join(f"{a}={b}" for a, b in pairs)


_name_pairs.__name__ = "list of NAME=NAME pairs"

# Groups, in the order --help shows them.
DATA, MODEL, TRAINING, ENHANCED, CHECKPOINTS, RUN = "data", "model", "training", "enhanced", "checkpoints", "run"
SCHEDULERS = ("linear", "cosine", "cosine-restarts", "plateau", "constant")


def option(default: Any, help: str, group: str, *, parse: Any = None, flag: str | None = None,
           choices: tuple | None = None, metavar: str | None = None) -> Any:
    """One :class:`ThetaConfig` option field: ``field(default=..., metadata={"help": ..., ...})``.

    The flag's parser comes from the field's type (``bool`` -> true/false words, ``list[str]`` -> a repeatable
    flag, ``int | None`` -> ``int``) unless ``parse`` names another; a list default is a fresh list per config.
    """
    metadata = {"help": help, "group": group, "parse": parse, "flag": flag, "choices": choices, "metavar": metavar}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(kw_only=True)
class ThetaConfig:
    """The resolved configuration of one run: one typed field per option, plus raw TrainingArguments overrides.

    The option fields *are* the option table: :data:`OPTIONS` (the flags, their help, the YAML keys and the
    README table) is read from them. An unknown name is an error at construction (``TypeError``) and at
    assignment (``AttributeError`` naming the closest field).
    """

    # ---- where the values came from (not options)
    preset: str = DEFAULT_PRESET
    config_file: str | None = None
    training_args: dict[str, Any] = field(default_factory=dict)  # TrainingArguments fields, passed through
    sources: dict[str, str] = field(default_factory=dict)  # option name -> "default", "preset X", "command line", ...

    # ---- data
    data: list[str] = option([], "training data: file, folder or saved dataset (repeatable); PATH:WEIGHT mixes sources "
                             "(a.json:2 twice, b.jsonl:0.5 a seeded half)", DATA, metavar="PATH[:WEIGHT]")
    val_data: list[str] = option([], "validation data (repeatable); without it --val-split is used", DATA, metavar="PATH")
    val_split: float = option(0.1, "fraction of the training data held out for validation (seeded)", DATA)
    skip_invalid: bool = option(False, "skip bad records/files with a summary instead of stopping", DATA)
    field_map: str | None = option(None, "read fields under other names, THETA=FILE: question=prompt,answer=response,"
                                   "conversations=exchanges,role=from,content=value", DATA, parse=_name_pairs,
                                   metavar="THETA=FILE,...")
    role_map: str | None = option(None, "read other role names, FILE=THETA: human=user,bot=assistant,model=assistant",
                                  DATA, parse=_name_pairs, metavar="FILE=THETA,...")
    template: str = option("auto", "prompt format: chat template if the tokenizer has one (auto), Question/Answer (qa), "
                           "or chat", DATA, choices=("auto", "qa", "chat"))
    max_seq_length: int = option(512, "longest example in tokens; longer ones are cut with a counted warning", DATA)
    train_on_prompt: bool = option(False, "compute the training loss on prompt tokens too (default: answers only; "
                                   "validation is always on answers)", DATA)
    packing: bool = option(False, "pack several examples into one row (refused where the model would mix them)", DATA)
    group_by_length: bool = option(True, "batch examples of similar length together (less padding)", DATA)

    # ---- model
    model_name: str = option("gpt2", "hub id, local model folder, .gguf file (dequantized; the gguf extra), or "
                                     "theta-tiny (offline, built-in)", MODEL)
    trust_remote_code: bool = option(False, "allow model code from the model folder/hub (off unless you trust it)", MODEL)
    load_checkpoint: str | None = option(None, "start a new fine-tuning run from this checkpoint's weights (fresh "
                                         "optimizer)", MODEL, metavar="PATH")
    lora: bool = option(False, "train LoRA adapters (peft) instead of all weights; checkpoints then hold the adapter",
                        MODEL)
    lora_r: int = option(8, "LoRA rank", MODEL)
    lora_alpha: int = option(16, "LoRA scaling numerator (the update is scaled by alpha / r)", MODEL)
    lora_dropout: float = option(0.05, "dropout on the LoRA branch", MODEL)
    lora_dora: bool = option(False, "DoRA (peft use_dora): LoRA on the direction of each weight plus a trained "
                             "magnitude; closer to full fine-tuning at the same rank, slower steps", MODEL)
    lora_rslora: bool = option(False, "rank-stabilised LoRA (peft use_rslora): scale by alpha / sqrt(r), so high "
                               "ranks keep learning", MODEL)
    load_in_4bit: bool = option(False, "QLoRA: load the frozen base in 4-bit NF4 (bitsandbytes, the qlora extra; "
                                "CUDA only) and train --lora adapters on it", MODEL)
    load_in_8bit: bool = option(False, "load the frozen base in 8-bit (bitsandbytes, CUDA only) and train --lora "
                                "adapters on it", MODEL)
    lora_target_modules: str | None = option(None, "comma-separated module names; default: peft's all-linear, "
                                             "every linear layer but the LM head (GPT-2 c_attn,c_proj,c_fc; Llama "
                                             "q/k/v/o and gate/up/down)", MODEL, metavar="NAMES")

    # ---- training
    epochs: float = option(100.0, "number of training epochs", TRAINING)
    batch_size: int = option(4, "per-device batch size", TRAINING)
    eval_batch_size: int | None = option(None, "per-device batch size of the evaluation at each epoch end (no backward "
                                         "pass: often room for more); default: --batch-size", TRAINING)
    grad_accum: int = option(4, "gradient accumulation steps", TRAINING)
    learning_rate: float = option(5e-5, "peak learning rate", TRAINING)
    warmup_steps: int = option(500, "linear warmup steps", TRAINING)
    weight_decay: float = option(0.01, "AdamW weight decay", TRAINING)
    precision: str = option("auto", "auto = fp16 on CUDA, fp32 on CPU; bf16 where the card supports it", TRAINING,
                            choices=("auto", "fp16", "bf16", "fp32"))
    gradient_checkpointing: bool = option(False, "recompute activations in backward to save memory", TRAINING)
    chunked_loss: str = option("auto", "the fused LM head and loss make the logits of 256 MiB of answer positions at "
                               "a time, so a batch's logits never exist at once (no recomputation); auto = on for "
                               "vocabularies of 100k tokens and more (Llama 3, Qwen, Gemma)", TRAINING,
                               choices=("auto", "on", "off"))
    torch_compile: bool = option(False, "compile the model with torch.compile (Trainer's torch_compile): a slower "
                                 "start, faster steps where the backend compiles well (benchmarks/train_throughput.py "
                                 "measures it)", TRAINING)
    reuse_host_memory: bool = option(False, "training on a CPU, keep freed host memory for reuse within each "
                                     "optimizer step instead of returning it to the kernel at once (glibc): "
                                     "measured 0.98-1.12x per epoch for 1-26% more peak memory "
                                     "(benchmarks/README.md)", TRAINING)
    auto_batch_size: bool = option(False, "on CUDA out of memory, halve --batch-size, double --grad-accum (same "
                                   "effective batch) and start again", TRAINING)
    logging_steps: int = option(10, "log training loss and learning rate every N optimizer steps", TRAINING)
    dataloader_workers: int | None = option(None, "processes that prepare batches beside training; default: with "
                                            "--augment 1 (2 on 6+ cores), augmenting and tokenizing off the training "
                                            "thread, else 0 (the data is tokenized once before training)", TRAINING)
    seed: int = option(42, "random seed (model init, data order, validation split)", TRAINING)

    # ---- enhanced training: augmentation, schedules, regularization, stopping, spike guard
    augment: bool = option(False, "augment training questions on the fly (seeded, different every epoch)", ENHANCED)
    augment_config: str | None = option(None, "YAML file tuning the augmentation mix (see docs/enhanced_training.md)",
                                        ENHANCED, metavar="FILE.yaml")
    neftune_alpha: float | None = option(None, "NEFTune noise on token embeddings (Trainer's neftune_noise_alpha), "
                                         "e.g. 5", ENHANCED)
    lr_scheduler: str = option("linear", "learning-rate schedule after warmup", ENHANCED, choices=SCHEDULERS)
    warmup_ratio: float | None = option(None, "warmup as a fraction of all steps (instead of --warmup-steps)", ENHANCED)
    lr_cycles: int = option(3, "cosine-restarts: number of hard restarts over the run", ENHANCED)
    lr_factor: float = option(0.5, "plateau: multiply the learning rate by this when validation loss stalls", ENHANCED)
    lr_patience: int = option(2, "plateau: evaluations without improvement before lowering the learning rate", ENHANCED)
    dropout: float | None = option(None, "override the model's dropout probabilities (residual, embedding, attention)",
                                   ENHANCED)
    label_smoothing: float = option(0.0, "label smoothing factor for the loss", ENHANCED)
    early_stopping_patience: int | None = option(None, "stop after N evaluations without improvement (theta_best is "
                                                 "kept)", ENHANCED, metavar="N")
    spike_guard: bool = option(False, "roll back to the best weights when validation loss spikes or training loss is "
                               "NaN", ENHANCED)
    spike_factor: float = option(1.5, "spike guard: a validation loss above best x this is a spike", ENHANCED)
    spike_lr_factor: float = option(0.5, "spike guard: multiply the learning rate by this after a rollback", ENHANCED)
    spike_max_rollbacks: int = option(3, "spike guard: stop cleanly after this many rollbacks", ENHANCED)

    # ---- checkpoints
    checkpoint_dir: str = option("models", "where theta_checkpoint_epoch_N, theta_best and theta_final go",
                                 CHECKPOINTS, metavar="DIR")
    save_total_limit: int = option(3, "keep the newest N epoch checkpoints, or all (theta_best and theta_final are "
                                   "always kept; the banner shows the disk the run needs)", CHECKPOINTS,
                                   parse=_keep_limit, metavar="N|all")  # 0 = keep every epoch checkpoint
    resume: str | None = option(None, "continue an interrupted run: auto (newest complete checkpoint) or PATH",
                                CHECKPOINTS, metavar="auto|PATH")
    metric_for_best: str = option("eval_loss", "validation metric that picks theta_best (lower is better for loss)",
                                  CHECKPOINTS)

    # ---- run
    logdir: str = option("logs", "TensorBoard and text logs root; each run gets its own sub-folder", RUN, metavar="DIR")
    grad_log_steps: int = option(50, "log per-layer-group gradient norms every N optimizer steps (0 = off)", RUN,
                                 metavar="N")
    histogram_steps: int = option(0, "write gradient and weight histograms every N optimizer steps (0 = off)", RUN,
                                  metavar="N")
    generation_eval: int = option(8, "at each evaluation, answer N fixed validation questions: ROUGE-L/BLEU/EM "
                                  "scalars and example predictions in TensorBoard (0 = off; needed for "
                                  "--metric-for-best rougeL)", RUN, metavar="N")
    plan: bool = option(False, "print the estimated peak GPU memory and the fastest settings that fit --gpu-memory, "
                        "then exit (loads no data, allocates nothing)", RUN)
    gpu_memory: str | None = option(None, "target GPU memory for --plan: 12GiB (the RTX 3060, default), 12GB = 10^9 "
                                    "bytes, 8000MB", RUN, metavar="SIZE")
    dry_run: bool = option(False, "load and check everything, print the plan and one formatted example, then exit", RUN)
    verbose: bool = option(False, "console: also print Trainer's raw log dictionaries (always in train.log), library "
                           "progress bars and the library messages theta_ai hides as harmless", RUN)
    report_to: str = option("tensorboard", "where the metrics go: tensorboard (offline), wandb, mlflow, comma-separated, "
                            "or none; wandb and mlflow are the extras theta_ai[wandb] / theta_ai[mlflow] and get "
                            "theta_ai's own scalars too", RUN, parse=_trackers, metavar="NAMES")
    distributed: bool = option(False, "accepted for torch.distributed.launch compatibility; the launcher's environment "
                               "decides", RUN)

    def __setattr__(self, name: str, value: Any) -> None:
        fields_ = type(self).__dataclass_fields__
        if name not in fields_:
            raise AttributeError(f"ThetaConfig has no field {name!r}{closest(name, fields_)}")
        object.__setattr__(self, name, value)

    @property
    def values(self) -> ConfigValues:
        """The options as a mapping, option name -> value (a live view of the fields; ``dict(cfg.values)`` copies)."""
        return ConfigValues(self)

    def as_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "config_file": self.config_file, **self.values,
                "training_args": dict(self.training_args)}


class ConfigValues(MutableMapping):
    """``cfg.values``: the option fields of a :class:`ThetaConfig` by name. Reads and writes go to the fields
    (a write passes the same unknown-name guard); options cannot be deleted."""

    __slots__ = ("_cfg",)

    def __init__(self, cfg: ThetaConfig) -> None:
        self._cfg = cfg

    def __getitem__(self, name: str) -> Any:
        if name not in OPTION_BY_NAME:
            raise KeyError(name)
        return getattr(self._cfg, name)

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in OPTION_BY_NAME:
            raise KeyError(f"unknown option {name!r}{closest(name, OPTION_BY_NAME)}")
        setattr(self._cfg, name, value)

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"cannot delete option {name!r} from a ThetaConfig")

    def __iter__(self):
        return iter(OPTION_BY_NAME)

    def __len__(self) -> int:
        return len(OPTION_BY_NAME)

    def __repr__(self) -> str:
        return repr(dict(self))


def _option_of(f: Field, hint: Any) -> Option:
    """The :class:`Option` row of one ThetaConfig field: name, parser, default and help from the field."""
    repeatable = get_origin(hint) is list
    if repeatable or get_origin(hint) in (Union, UnionType):  # list[str] -> str, int | None -> int
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    meta = f.metadata
    parse = meta["parse"] or (_bool if hint is bool else hint)
    default = f.default_factory() if f.default is MISSING else f.default
    return Option(f.name, parse, default, meta["help"], meta["group"], flag=meta["flag"], choices=meta["choices"],
                  repeatable=repeatable, metavar=meta["metavar"])


_HINTS = get_type_hints(ThetaConfig)
OPTIONS: tuple[Option, ...] = tuple(_option_of(f, _HINTS[f.name]) for f in fields(ThetaConfig) if "help" in f.metadata)
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
