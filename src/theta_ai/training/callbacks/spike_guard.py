"""The spike guard: roll back to theta_best on a validation-loss spike or a non-finite loss.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import TrainerCallback

from theta_ai.model.weights import ADAPTER_FILE, has_saved_weights, load_saved_weights
from theta_ai.training.checkpoints import BEST_DIR

logger = logging.getLogger("theta_ai")


class SpikeGuardCallback(TrainerCallback):
    """Roll back to ``theta_best`` when the validation loss spikes or the training loss is not finite.

    A spike is a validation loss above ``factor`` x the best so far. A rollback reloads the best
    weights and their optimizer state, multiplies the learning rate (and the schedule's base rates)
    by ``lr_factor`` and carries on; after ``max_rollbacks`` rollbacks the run stops cleanly with
    the best model in place. Each rollback is a warning line and a ``theta/rollbacks`` scalar.
    """

    def __init__(self, checkpoint_dir: str | Path, factor: float = 1.5, lr_factor: float = 0.5,
                 max_rollbacks: int = 3, writer=None):
        self.best_dir = Path(checkpoint_dir) / BEST_DIR
        self.factor, self.lr_factor, self.max_rollbacks = factor, lr_factor, max_rollbacks
        self.writer = writer
        self.rollbacks: list[dict] = []
        self.gave_up = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self._spike(f"training loss is {loss}", state, control, **kwargs)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        best = state.best_metric  # still the best *before* this evaluation
        if loss is None or best is None or args.metric_for_best_model not in ("loss", "eval_loss"):
            return
        if not math.isfinite(loss) or loss > best * self.factor:
            self._spike(f"validation loss {loss:.4f} > {self.factor:g} x best {best:.4f}", state, control, **kwargs)

    def _spike(self, reason: str, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):

        has_best = has_saved_weights(self.best_dir)  # one file, shards + index, or a LoRA adapter
        if self.gave_up or not has_best:
            if not self.gave_up:
                logger.warning("spike guard: %s at step %d, but there is no best model yet to roll back to",
                               reason, state.global_step)
            return
        self._restore(model, optimizer, lr_scheduler)
        self.rollbacks.append({"step": state.global_step, "reason": reason})
        n = len(self.rollbacks)
        if self.writer is not None:
            self.writer.add_scalar("theta/rollbacks", n, state.global_step)
            self.writer.add_text("theta/rollback", f"step {state.global_step}: {reason}; rolled back to theta_best",
                                 state.global_step)
        if n >= self.max_rollbacks:
            self.gave_up = True
            control.should_training_stop = True
            logger.warning("spike guard: %s at step %d; rolled back to the best model for the %d. time and stopped "
                           "(--spike-max-rollbacks %d). theta_best holds the best model; try a lower --learning-rate",
                           reason, state.global_step, n, self.max_rollbacks)
        else:
            logger.warning("spike guard: %s at step %d; rolled back to the best model and multiplied the learning "
                           "rate by %g (rollback %d of at most %d)", reason, state.global_step, self.lr_factor, n,
                           self.max_rollbacks)

    def _restore(self, model, optimizer, lr_scheduler) -> None:


        device = next(model.parameters()).device
        adapter = self.best_dir / ADAPTER_FILE
        if adapter.is_file():  # LoRA: only the adapter trained, so only the adapter rolls back

            set_peft_model_state_dict(model, load_file(str(adapter), device=str(device)))
        else:  # one file or every shard; any key mismatch (tied lm_head aside) raises WeightLoadError
            load_saved_weights(model, self.best_dir)
        if optimizer is not None and (self.best_dir / "optimizer.pt").is_file():
            optimizer.load_state_dict(torch.load(self.best_dir / "optimizer.pt", map_location=device, weights_only=True))
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_factor
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)
        if scheduler is not None and hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [lr * self.lr_factor for lr in scheduler.base_lrs]
