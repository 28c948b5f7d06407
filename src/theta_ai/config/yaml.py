"""YAML configs: ``yaml.safe_load`` with located errors, the same keys as the flags, plus ``training_args``.

``data:`` / ``val_data:`` items are paths, ``PATH:WEIGHT`` or ``{path: ..., weight: ...}`` mappings; ``field_map:`` and
``role_map:`` may be mappings (``{question: prompt}``) or the flags' ``a=b,c=d`` text.
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


def _data_entry(entry: Any, origin: str) -> Any:
    """A ``data:`` list item: a path, ``PATH:WEIGHT``, or ``{path: ..., weight: ...}`` (``fraction`` is the same as
    ``weight``) -> the ``PATH:WEIGHT`` text the command line takes."""
    if not isinstance(entry, dict):
        return entry
    keys = ("path", "weight", "fraction")
    unknown = [str(k) for k in entry if k not in keys]
    if unknown or "path" not in entry or ("weight" in entry and "fraction" in entry):
        hint = closest(unknown[0], keys) if unknown else ""
        raise ConfigError(f"{origin}: {entry!r}: write {{path: FILE, weight: NUMBER}} (weight optional; fraction is "
                          f"the same as weight){hint}")
    weight = entry.get("weight", entry.get("fraction"))
    if weight is None:
        return str(entry["path"])
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ConfigError(f"{origin}: {entry!r}: the weight must be a number above 0, got {weight!r}")
    if "fraction" in entry and not 0 < weight <= 1:
        raise ConfigError(f"{origin}: {entry!r}: a fraction is above 0 and at most 1; use weight: for more copies")
    return f"{entry['path']}:{weight}"


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
        elif key in ("data", "val_data"):
            entries = [value] if isinstance(value, (dict, str)) else value
            entries = [_data_entry(e, f"{path}: {key}") for e in entries] if isinstance(entries, list) else entries
            out[key] = _coerce(OPTION_BY_NAME[key], entries, str(path))
        elif key in OPTION_BY_NAME:
            out[key] = _coerce(OPTION_BY_NAME[key], value, str(path))
        else:
            raise ConfigError(f"{path}: unknown key {raw_key!r}{closest(key, [*OPTION_BY_NAME, 'training_args', 'preset'])}")
    return out
