"""theta_ai's training progress bar: one bar, loss / learning rate / tokens per second in its postfix.

It takes the place of transformers' ``ProgressCallback`` (and ``PrinterCallback`` / ``NotebookProgressCallback``):
no nested evaluation bar every epoch, and Trainer's raw log dictionaries go to the ``theta_ai.trainer_logs``
logger (``train.log``; the console only with ``--verbose``) instead of being printed between the bars.
An evaluation or a save says one line only when it takes longer than ``slow_seconds``.
"""

from __future__ import annotations

import logging
import time

from tqdm import tqdm
from transformers import TrainerCallback

logger = logging.getLogger("theta_ai")
RAW_LOGS_LOGGER = "theta_ai.trainer_logs"  # cli/common.py names the same logger
raw_logger = logging.getLogger(RAW_LOGS_LOGGER)
raw_logger.propagate = False  # not to theta_ai's handlers: theta-train adds train.log (and, --verbose, the console)
SLOW_SECONDS = 10.0


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class TrainingProgressCallback(TrainerCallback):
    """One tqdm bar over the optimizer steps of the run; see the module docstring.

    ``show_bar=False`` (Trainer's ``disable_tqdm``) keeps everything but the bar.
    """

    def __init__(self, show_bar: bool = True, slow_seconds: float = SLOW_SECONDS):
        self.show_bar = show_bar
        self.slow_seconds = slow_seconds
        self.bar = None
        self._mark = time.monotonic()
        self._tokens = None  # (time, tokens seen) at the last training log
        self._postfix: dict[str, str] = {}

    # -------------------------------------------------------------- bar
    def on_train_begin(self, args, state, control, **kwargs):
        self._mark = time.monotonic()
        self._tokens = (self._mark, state.num_input_tokens_seen or 0)
        if state.is_world_process_zero and self.show_bar:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, dynamic_ncols=True, unit="step",
                            desc="training")

    def on_step_end(self, args, state, control, **kwargs):
        self._mark = time.monotonic()
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._mark = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        shown = {k: v for k, v in logs.items() if k != "total_flos"}
        raw_logger.info("%s", {k: _short(v) for k, v in shown.items()})
        if "loss" in logs:
            now = time.monotonic()
            postfix = {"loss": f"{logs['loss']:.4f}"}
            if "learning_rate" in logs:
                postfix["lr"] = f"{logs['learning_rate']:.3g}"
            tokens = state.num_input_tokens_seen or 0
            if self._tokens is not None and tokens > self._tokens[1] and now > self._tokens[0]:
                postfix["tok/s"] = f"{(tokens - self._tokens[1]) / (now - self._tokens[0]):,.0f}"
            self._tokens = (now, tokens)
            self._postfix = postfix
            if self.bar is not None:
                self.bar.set_postfix(postfix, refresh=True)
        self._mark = time.monotonic()

    # -------------------------------------------------------------- evaluations and saves: quiet unless slow
    def _pause(self, state, what: str) -> None:
        now = time.monotonic()
        seconds = now - self._mark
        if state.is_world_process_zero and seconds > self.slow_seconds:
            logger.info("%s at step %d took %.0f s", what, state.global_step, seconds)
        if self._tokens is not None:  # tokens per second count training time only
            self._tokens = (self._tokens[0] + seconds, self._tokens[1])
        self._mark = now

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._pause(state, "evaluation")

    def on_save(self, args, state, control, **kwargs):
        self._pause(state, "saving the checkpoint")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
