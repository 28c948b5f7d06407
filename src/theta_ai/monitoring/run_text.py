"""Text panels (resolved configuration, example predictions) and the HParams entry."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any


logger = logging.getLogger("theta_ai")

from theta_ai.monitoring.base import _WriterCallback

# ---------------------------------------------------------------------------- text


def _md_cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def config_markdown(cfg_dict: Mapping[str, Any]) -> str:
    """The resolved configuration as a two-column Markdown table (TensorBoard renders it in TEXT)."""
    rows = [f"| {_md_cell(key)} | {_md_cell(value)} |" for key, value in cfg_dict.items()]
    return "\n".join(["| option | value |", "|---|---|", *rows])


class ConfigTextCallback(_WriterCallback):
    """The run's resolved configuration as the ``config`` text tag, at the start of training."""

    def __init__(self, writer, cfg_dict: Mapping[str, Any]):
        super().__init__(writer)
        self.cfg_dict = dict(cfg_dict)

    def on_train_begin(self, args, state, control, **kwargs):
        if self._active(state):
            self.writer.add_text("config", config_markdown(self.cfg_dict), state.global_step)
            self.writer.flush()


def predictions_markdown(questions, references, predictions) -> str:
    rows = [f"| {i} | {_md_cell(q)} | {_md_cell(r)} | {_md_cell(p)} |"
            for i, (q, r, p) in enumerate(zip(questions, references, predictions))]
    return "\n".join(["| # | question | reference | prediction |", "|---|---|---|---|", *rows])


class PredictionTextCallback(_WriterCallback):
    """Example predictions at each evaluation as the ``eval/predictions`` text tag.

    ``GenerationEvalCallback`` generates the answers (and writes only scalars); this callback reads
    its ``examples`` and ``last_predictions``, so it must come *after* it in the callbacks list.
    """

    def __init__(self, writer, generation_callback):
        super().__init__(writer)
        self.generation_callback = generation_callback
        self._written: int | None = None

    def on_evaluate(self, args, state, control, **kwargs):
        predictions = self.generation_callback.last_predictions
        if not self._active(state) or not predictions or id(predictions) == self._written:
            return
        self._written = id(predictions)
        examples = self.generation_callback.examples
        self.writer.add_text("eval/predictions", predictions_markdown([e.question for e in examples],
                                                                      [e.answer for e in examples], predictions),
                             state.global_step)
        self.writer.flush()


# ---------------------------------------------------------------------------- hparams

HPARAM_KEYS = ("learning_rate", "batch_size", "grad_accum", "effective_batch", "epochs", "max_seq_length",
               "weight_decay", "warmup_steps", "warmup_ratio", "lr_scheduler", "model_name", "preset", "augment",
               "lora")
LORA_KEYS = ("lora_r", "lora_alpha")  # only with lora on


def run_hparams(cfg_dict: Mapping[str, Any], world_size: int = 1) -> dict[str, Any]:
    """The hyperparameters the HParams view compares; keys missing from (or None in) the config are left out.

    ``lora`` is there when the config has the option; ``lora_r`` and ``lora_alpha`` only when it is on.
    """
    values = dict(cfg_dict)
    if values.get("batch_size") and values.get("grad_accum"):
        values["effective_batch"] = values["batch_size"] * values["grad_accum"] * max(1, world_size)
    keys = HPARAM_KEYS + (LORA_KEYS if values.get("lora") else ())
    out: dict[str, Any] = {}
    for key in keys:
        value = values.get(key)
        if value is None:
            continue
        out[key] = value if isinstance(value, (bool, int, float, str)) else _md_cell(value)
    return out


def eval_loss_metrics(log_history) -> dict[str, float]:
    """``hparam/eval_loss`` (the last evaluation) and ``hparam/best_eval_loss`` from ``state.log_history``."""
    losses = [entry["eval_loss"] for entry in log_history or () if isinstance(entry.get("eval_loss"), (int, float))]
    if not losses:
        return {}
    return {"hparam/eval_loss": float(losses[-1]), "hparam/best_eval_loss": float(min(losses))}


class HParamsCallback(_WriterCallback):
    """At the end of training, the run's hyperparameters and final/best validation loss for the HParams view.

    ``add_hparams(..., run_name=".")`` writes into the run folder itself (torch joins ``log_dir`` and
    ``run_name``), so the HParams view lists this run next to its curves instead of a timestamped
    sub-run. The losses come from ``state.log_history``, which a resumed run restores.
    """

    def __init__(self, writer, cfg_dict: Mapping[str, Any]):
        super().__init__(writer)
        self.cfg_dict = dict(cfg_dict)

    def on_train_end(self, args, state, control, **kwargs):
        if not self._active(state):
            return
        hparams = run_hparams(self.cfg_dict, getattr(args, "world_size", 1))
        metrics = eval_loss_metrics(state.log_history)
        # Trainer's TensorBoardCallback closes the shared writer in its own on_train_end; add_hparams
        # then reopens it (a new events file in the same folder), so close it again afterwards.
        was_closed = getattr(self.writer, "all_writers", ()) is None
        self.writer.add_hparams(hparams, metrics, run_name=".", global_step=state.global_step)
        if was_closed:
            self.writer.close()
        else:
            self.writer.flush()


