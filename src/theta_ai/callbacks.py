"""Trainer callbacks: the best model folder and the console/run-log lines.

Behaviour is added through ``TrainerCallback`` hooks; the training loop is Trainer's own.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from pathlib import Path

from transformers import TrainerCallback

from .checkpoints import (BEST_DIR, checkpoint_name, epoch_checkpoints, global_step_of, publish_best,
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
        logger.info("new best model: epoch %d, %s %.4f -> %s", epoch, self.metric, state.best_metric,
                    self.checkpoint_dir / BEST_DIR)

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
        extra = "".join(f", {name} {metrics[key]:.4f}" for key, name in (
            ("eval_token_accuracy", "answer-token accuracy"), ("eval_rougeL", "ROUGE-L")) if key in metrics)
        logger.info("epoch %.0f: train loss %s, validation loss %.4f (perplexity %.2f)%s",
                    state.epoch or 0, train, loss if loss is not None else float("nan"), ppl, extra)


class GracefulStopCallback(TrainerCallback):
    """SIGTERM or Ctrl+C: finish the current step, save a checkpoint there, and stop cleanly.

    A second Ctrl+C stops at once. The checkpoint is ``theta_checkpoint_step_S`` (mid-epoch), which
    ``--resume auto`` picks up. In a multi-process run the stop request is shared across ranks each
    step, so all ranks save and stop at the same step.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        logger.warning("%s received: finishing this step and saving a checkpoint "
                       "(press Ctrl+C again to stop at once)", self.received)

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for name in self.SIGNALS:
            if hasattr(signal, name):
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _stop_requested(self, args) -> bool:
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.received is not None
        flag = torch.tensor([1 if self.received else 0], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.received is None:
            self.received = "SIGTERM"
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._stop_requested(args):
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        # Trainer runs its end-of-epoch evaluate/save even when a stop cut the epoch short; the checkpoint
        # was already written at the step, and a partial-epoch evaluation would move the RNG past the
        # saved state (and could even replace theta_best), so both are skipped.
        if self.received is not None and abs(state.epoch - round(state.epoch)) > 1e-6:
            control.should_save = False
            control.should_evaluate = False
        return control


class EpochAwareDatasetCallback(TrainerCallback):
    """Tells an on-the-fly dataset (augmentation) which epoch is starting."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor((state.epoch or 0) + 1e-9))


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
        from .weights import has_saved_weights

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
        import torch
        from safetensors.torch import load_file

        from .weights import ADAPTER_FILE, load_saved_weights

        device = next(model.parameters()).device
        adapter = self.best_dir / ADAPTER_FILE
        if adapter.is_file():  # LoRA: only the adapter trained, so only the adapter rolls back
            from peft import set_peft_model_state_dict

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
