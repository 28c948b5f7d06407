"""Trainer callbacks: the best model folder and the console/run-log lines.

Behaviour is added through ``TrainerCallback`` hooks; the training loop is Trainer's own.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from transformers import TrainerCallback

from .checkpoints import BEST_DIR, epoch_dir_name, publish_best

logger = logging.getLogger("theta_ai")


class BestModelCallback(TrainerCallback):
    """After each save, if that evaluation was the best so far, atomically replace ``theta_best/``.

    "Best" is Trainer's own bookkeeping (``metric_for_best_model``, ``state.best_metric``,
    ``state.best_global_step``), which is saved in every checkpoint and so survives a resume.
    """

    def __init__(self, checkpoint_dir: str | Path, metric: str):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.metric = metric
        self.last_metrics: dict = {}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.last_metrics = dict(metrics or {})

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or state.best_global_step != state.global_step:
            return
        epoch = round(state.epoch)
        checkpoint = self.checkpoint_dir / epoch_dir_name(epoch)
        info = {"epoch": epoch, "global_step": state.global_step, "metric": self.metric,
                "value": state.best_metric, "checkpoint": checkpoint.name, "metrics": self.last_metrics}
        publish_best(checkpoint, self.checkpoint_dir / BEST_DIR, info)
        logger.info("new best model: epoch %d, %s %.4f -> %s", epoch, self.metric, state.best_metric,
                    self.checkpoint_dir / BEST_DIR)


class EpochSummaryCallback(TrainerCallback):
    """One plain line per evaluation (epoch, losses, perplexity) for the console and the run log."""

    def __init__(self):
        self.last_train_loss: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_train_loss = logs["loss"]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        loss = metrics.get("eval_loss")
        ppl = math.exp(loss) if loss is not None and loss < 50 else float("inf")
        train = f"{self.last_train_loss:.4f}" if self.last_train_loss is not None else "-"
        logger.info("epoch %.0f: train loss %s, validation loss %.4f (perplexity %.2f)",
                    state.epoch or 0, train, loss if loss is not None else float("nan"), ppl)
