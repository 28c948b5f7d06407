"""SIGTERM / Ctrl+C: save a checkpoint at the current step and stop cleanly.
"""

from __future__ import annotations

import logging
import signal
import threading

from transformers import TrainerCallback

logger = logging.getLogger("theta_ai")


class GracefulStopCallback(TrainerCallback):
    """SIGTERM or Ctrl+C: finish the current step, save a checkpoint there, and stop cleanly.

    A second Ctrl+C stops at once. The checkpoint is ``theta_checkpoint_step_S`` (mid-epoch), which
    ``--resume auto`` picks up. In a multi-process run the stop request is shared across ranks each
    step (a one-integer all-reduce on the CPU, through gloo, so no step waits on the GPU for it), so all
    ranks save and stop at the same step.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}
        self._group = None  # a gloo group: the stop flag is a CPU tensor, so sharing it never waits on a GPU

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        logger.warning("%s received: finishing this step and saving a checkpoint "
                       "(press Ctrl+C again to stop at once)", self.received)

    def on_train_begin(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # every process gets here at the same point (a collective call); NCCL cannot reduce CPU tensors
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
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
        # On the CPU, through gloo: a CUDA flag's .item() would wait for every kernel queued so far, every step.
        flag = torch.tensor([1 if self.received else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        requested = bool(flag[0])
        if requested and self.received is None:
            self.received = "SIGTERM"
        return requested

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
