"""theta_ai: fine-tune small conversational question-answering language models on one consumer GPU.

Everything the command-line tools do is a library call::

    from theta_ai import resolve_config, prepare_run, train
    cfg = resolve_config({"epochs": 2}, preset="cpu-quickstart")
    result = train(cfg)

Names are imported lazily, so ``import theta_ai`` (and ``theta-train --help``) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # configuration
    "ConfigError": "config", "ThetaConfig": "config", "resolve_config": "config", "read_yaml_config": "config",
    "OPTIONS": "config", "PRESETS": "presets",
    # data
    "DataError": "data", "Example": "data", "ExampleFormatter": "data", "FormatStats": "data",
    "LoadResult": "data", "PaddingCollator": "data", "PackingUnsupportedError": "data", "TemplateError": "data",
    "check_packing_isolation": "data", "find_duplicates": "data", "find_leakage": "data",
    "load_examples": "data", "packing_collator": "data", "read_file": "data", "summarize_skipped": "data",
    # model
    "ModelLoadError": "modeling", "build_theta_tiny": "modeling", "load_model_and_tokenizer": "modeling",
    "set_dropout": "modeling",
    # training
    "ThetaTrainer": "trainer", "BestModelCallback": "callbacks", "PreparedRun": "training",
    "TrainResult": "training", "prepare_run": "training", "train": "training", "dry_run_report": "training",
    "latest_checkpoint": "checkpoints", "epoch_checkpoints": "checkpoints",
    # augmentation
    "AugmentConfig": "augment", "Augmenter": "augment",
    # evaluation
    "EvalSettings": "evaluation", "EvalResult": "evaluation", "evaluate_model": "evaluation",
    "evaluate_examples": "evaluation", "write_outputs": "evaluation", "GenerationEvalCallback": "eval_callback",
    "compute_metrics": "metrics", "preprocess_logits_for_metrics": "metrics", "compute_text_metrics": "metrics",
    "generate_answers": "generation",
    # memory planning
    "estimate_memory": "planner", "plan": "planner", "parse_memory": "planner", "LoraSpec": "planner",
    "MemoryEstimate": "planner",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'theta_ai' has no attribute {name!r}")


def __dir__():
    return __all__
