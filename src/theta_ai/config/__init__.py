"""Configuration, resolved once at the edge: the option table, presets, YAML files, and the typed result.

    from theta_ai.config import resolve_config
    cfg = resolve_config({"epochs": 2}, preset="cpu-quickstart")   # preset -> YAML -> flags

``ThetaConfig`` is a dataclass with one typed field per option; :data:`OPTIONS` is read from its fields.

Light on purpose (no torch, no transformers): ``theta-train --help`` imports it.
:mod:`theta_ai.config.training_args` (ThetaConfig -> ``transformers.TrainingArguments``) is imported
where training starts.
"""

from theta_ai.config.options import (BOOL_OPTIONS, OPTION_BY_NAME, OPTIONS, ConfigValues, Option, closest,
                                     options_table_markdown, parse_memory, write_readme_table)
from theta_ai.config.presets import DEFAULT_PRESET, PRESETS
from theta_ai.config.resolve import LOSS_METRICS, ThetaConfig, metric_key, resolve_config
from theta_ai.config.yaml import read_yaml_config, safe_load_yaml
from theta_ai.errors import ConfigError

__all__ = ["BOOL_OPTIONS", "ConfigError", "ConfigValues", "DEFAULT_PRESET", "LOSS_METRICS", "OPTIONS", "OPTION_BY_NAME", "Option",
           "PRESETS", "ThetaConfig", "closest", "metric_key", "options_table_markdown", "parse_memory",
           "read_yaml_config", "resolve_config", "safe_load_yaml", "write_readme_table"]
