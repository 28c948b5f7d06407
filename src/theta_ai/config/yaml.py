"""YAML configs: ``yaml.safe_load`` with located errors, the same keys as the flags, plus ``training_args``.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from theta_ai.errors import ConfigError
from theta_ai.config.options import OPTION_BY_NAME, _coerce, closest


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
