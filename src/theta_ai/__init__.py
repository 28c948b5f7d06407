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
    # errors
    "ThetaError": "errors", "ConfigError": "errors", "DataError": "errors", "TemplateError": "errors",
    "PackingUnsupportedError": "errors", "ModelLoadError": "errors", "WeightLoadError": "errors",
    "DiskSpaceError": "errors", "RunLockedError": "errors", "TrainingOOMError": "errors",
    # configuration
    "ThetaConfig": "config", "resolve_config": "config", "read_yaml_config": "config",
    "OPTIONS": "config", "PRESETS": "config", "sample_path": "config.samples",
    # data
    "Example": "data", "ExampleFormatter": "data", "FormatStats": "data",
    "LoadResult": "data", "PaddingCollator": "data",
    "check_packing_isolation": "data", "find_duplicates": "data", "find_leakage": "data",
    "load_examples": "data", "packing_collator": "data", "read_file": "data", "summarize_skipped": "data",
    "DataMaps": "data.mapping", "parse_maps": "data.mapping",
    # model
    "build_theta_tiny": "model.load", "load_model_and_tokenizer": "model.load",
    "set_dropout": "model.load", "merge_adapter": "model.merge",
    # training
    "ThetaTrainer": "training.trainer", "BestModelCallback": "training.callbacks", "PreparedRun": "training.run",
    "TrainResult": "training.run", "prepare_run": "training.run", "train": "training.run", "dry_run_report": "training.dry_run",
    "latest_checkpoint": "training.checkpoints", "epoch_checkpoints": "training.checkpoints",
    # augmentation
    "AugmentConfig": "augment", "Augmenter": "augment",
    # evaluation
    "EvalSettings": "eval.runner", "EvalResult": "eval.runner", "evaluate_model": "eval.runner",
    "evaluate_examples": "eval.runner", "write_outputs": "eval.runner", "GenerationEvalCallback": "eval.callback",
    "compute_metrics": "metrics", "preprocess_logits_for_metrics": "metrics", "compute_text_metrics": "metrics",
    "generate_answers": "eval.generation",
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
