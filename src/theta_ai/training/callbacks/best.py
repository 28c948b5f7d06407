"""theta_best: after each save that was the best so far, replace it atomically; repair it after a crash.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

from theta_ai.training.callbacks.progress import RAW_LOGS_LOGGER
from theta_ai.training.checkpoints import (BEST_DIR, checkpoint_name, epoch_checkpoints, global_step_of, publish_best,
                          read_best_info)

logger = logging.getLogger("theta_ai")


class BestModelCallback(TrainerCallback):
    """After each save, if that evaluation was the best so far, atomically replace ``theta_best/``.

    "Best" is Trainer's own bookkeeping (``metric_for_best_model``, ``state.best_metric``,
    ``state.best_global_step``), which is saved in every checkpoint and so survives a resume.
    """

    def __init__(self, checkpoint_dir: str | Path, metric: str, with_optimizer: bool = False):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.metric = metric
        self.with_optimizer = with_optimizer
        self.last_metrics: dict = {}
        self._checked = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.last_metrics = dict(metrics or {})

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or state.best_global_step != state.global_step:
            return
        epoch = round(state.epoch)
        checkpoint = self.checkpoint_dir / checkpoint_name(state.epoch, state.global_step)
        self._publish(checkpoint, state, dict(self.last_metrics))
        # the console's epoch line already says "new best"; train.log keeps where it went
        logging.getLogger(RAW_LOGS_LOGGER).info("new best model: epoch %d, %s %.4f -> %s", epoch, self.metric,
                                        state.best_metric, self.checkpoint_dir / BEST_DIR)

    def _publish(self, checkpoint: Path, state, metrics: dict) -> None:
        info = {"epoch": round(state.epoch), "global_step": state.best_global_step, "metric": self.metric,
                "value": state.best_metric, "checkpoint": checkpoint.name, "metrics": metrics}
        publish_best(checkpoint, self.checkpoint_dir / BEST_DIR, info, self.with_optimizer)

    def _repair(self, state) -> None:
        """A crash between an epoch checkpoint and its theta_best swap left theta_best one best behind:
        the resumed state (restored before the first epoch begins) names the best step, so publish it now."""
        if not state.is_world_process_zero or not state.best_global_step:
            return
        if read_best_info(self.checkpoint_dir).get("global_step") == state.best_global_step:
            return
        for _, checkpoint in epoch_checkpoints(self.checkpoint_dir):
            if global_step_of(checkpoint) == state.best_global_step:
                metrics = next((dict(h) for h in reversed(state.log_history)
                                if h.get("step") == state.best_global_step and "eval_loss" in h), {})
                self._publish(checkpoint, state, metrics)
                logger.warning("theta_best did not hold the best model (step %d; a crash interrupted its update): "
                               "republished it from %s", state.best_global_step, checkpoint.name)
                return

    def on_epoch_begin(self, args, state, control, **kwargs):
        if not self._checked:
            self._checked = True
            self._repair(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._repair(state)  # a resumed run with no epoch left to train never begins an epoch
