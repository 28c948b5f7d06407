"""Resolve one run's configuration: defaults, then the preset, then ``--config FILE.yaml``, then flags.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any

from theta_ai.config.options import (
    OPTION_BY_NAME,
    OPTIONS,
    ThetaConfig,
    _coerce,
    closest,
    parse_memory,
)
from theta_ai.config.presets import DEFAULT_PRESET, PRESETS
from theta_ai.config.samples import resolve_sample_paths
from theta_ai.config.yaml import read_yaml_config
from theta_ai.errors import ConfigError

# ThetaConfig lives with the option table
__all__ = ["LOSS_METRICS", "ThetaConfig", "metric_key", "resolve_config", "split_weight"]


LOSS_METRICS = ("eval_loss", "eval_perplexity")  # lower is better; every other metric: higher is better


def metric_key(name: str) -> str:
    """Trainer's name for an evaluation metric: ``rougeL`` -> ``eval_rougeL``."""
    return name if name.startswith("eval_") else f"eval_{name}"


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
    cfg = ThetaConfig(preset=preset_name, config_file=str(config_file) if config_file else None,
                      sources={option.name: "default" for option in OPTIONS})
    layers = [(f"preset {preset_name}", PRESETS[preset_name]), (f"config {config_file}", yaml_values),
              ("command line", cli_values)]
    for origin, layer in layers:
        for key, value in layer.items():
            if key == "training_args":
                cfg.training_args.update(value)
                continue
            if key not in OPTION_BY_NAME:
                raise ConfigError(f"{origin}: unknown option {key!r}{closest(key, OPTION_BY_NAME)}")
            setattr(cfg, key, _coerce(OPTION_BY_NAME[key], value, origin))
            cfg.sources[key] = origin

    for name in ("data", "val_data"):
        origin = f"{OPTION_BY_NAME[name].cli_flag} (from {cfg.sources[name]})"
        setattr(cfg, name, _resolve_data(getattr(cfg, name), origin, weights=name == "data"))
    _check_values(cfg)
    return cfg


_WEIGHT = re.compile(r":([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$")


def split_weight(entry: str) -> tuple[str, float | None]:
    """``"a.json:2"`` -> ``("a.json", 2.0)``: a trailing ``:NUMBER`` is a weight when the path without it exists or
    the whole entry does not; ``C:\\x``, ``a.json`` and an existing file ``notes:1`` stay paths (weight None)."""
    match = _WEIGHT.search(entry)
    if not match or not match.start() or (os.path.exists(entry) and not os.path.exists(entry[:match.start()])):
        return entry, None
    return entry[:match.start()], float(match.group(1))


def _resolve_data(entries: list[str] | None, origin: str, weights: bool) -> list[str] | None:
    """``sample:NAME`` resolved (a ``:WEIGHT`` kept after it); weights checked, and refused for validation data."""
    out = []
    for entry in entries or []:
        path, weight = split_weight(entry)
        if weight is not None and not weights:
            raise ConfigError(f"{origin}: {entry}: a weight mixes training data only; validation data is used whole")
        if weight is not None and not 0 < weight < float("inf"):
            raise ConfigError(f"{origin}: {entry}: the weight must be a number above 0 (leave the source out instead)")
        out.append(resolve_sample_paths([path], origin)[0] + entry[len(path):])
    return out if entries is not None else entries


def _check_values(cfg: ThetaConfig) -> None:
    positive = ("epochs", "batch_size", "grad_accum", "max_seq_length", "logging_steps")
    for name in positive:
        value = getattr(cfg, name)
        if value is None or value <= 0:
            raise ConfigError(f"{name} must be positive, got {value!r} (from {cfg.sources[name]})")
    for name in ("learning_rate", "weight_decay", "warmup_steps"):
        value = getattr(cfg, name)
        if value < 0:
            raise ConfigError(f"{name} must not be negative, got {value!r} (from {cfg.sources[name]})")
    if cfg.eval_batch_size is not None and cfg.eval_batch_size <= 0:
        raise ConfigError(f"eval_batch_size must be positive, got {cfg.eval_batch_size!r} "
                          f"(from {cfg.sources['eval_batch_size']})")
    if cfg.dataloader_workers is not None and cfg.dataloader_workers < 0:
        raise ConfigError(f"dataloader_workers must not be negative, got {cfg.dataloader_workers!r} "
                          f"(from {cfg.sources['dataloader_workers']})")
    if not 0 < cfg.val_split < 1:
        raise ConfigError(f"val_split must be between 0 and 1, got {cfg.val_split!r}")
    for name in ("dropout", "label_smoothing", "warmup_ratio"):
        value = getattr(cfg, name)
        if value is not None and not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value!r} (from {cfg.sources[name]})")
    for name in ("spike_lr_factor", "lr_factor"):
        value = getattr(cfg, name)
        if not 0 < value < 1:
            raise ConfigError(f"{name} must be between 0 and 1, got {value!r} (from {cfg.sources[name]})")
    if cfg.spike_factor <= 1:
        raise ConfigError(f"spike_factor must be above 1, got {cfg.spike_factor!r}")
    metric = metric_key(cfg.metric_for_best)
    if metric not in LOSS_METRICS + ("eval_token_accuracy",) and not cfg.generation_eval:
        raise ConfigError(f"--metric-for-best {cfg.metric_for_best} needs generated answers; "
                          "set --generation-eval N (e.g. 32) or use eval_loss")
    if cfg.gpu_memory is not None:

        parse_memory(cfg.gpu_memory)
    for tracker in cfg.report_to.split(","):
        if tracker in ("wandb", "mlflow") and importlib.util.find_spec(tracker) is None:
            raise ConfigError(f"--report-to {tracker} needs the {tracker} package, which is not installed: "
                              f'pip install "theta_ai[{tracker}]" (or --report-to tensorboard, which works offline)')
    if cfg.save_total_limit is None:
        cfg.save_total_limit = 0  # YAML "save_total_limit: null": keep every epoch checkpoint
