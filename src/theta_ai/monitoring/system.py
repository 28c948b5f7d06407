"""Throughput (tokens and samples per second) and memory (CUDA or resident) scalars."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


logger = logging.getLogger("theta_ai")

from theta_ai.monitoring.base import GIB, MEMORY_WARNING_FRACTION, _WriterCallback

# ---------------------------------------------------------------------------- throughput


class ThroughputCallback(_WriterCallback):
    """Samples and tokens per second over the interval between two training logging steps.

    The interval is wall time (``time.perf_counter``) minus the time spent in evaluation and
    checkpoint saving, so the rate is the training speed (data loading included). Tokens are
    ``state.num_input_tokens_seen`` (summed over all processes), which ThetaTrainer keeps from the counts
    its collator makes on the CPU (real tokens: the attention-mask ones), and a plain Trainer keeps with
    ``TrainingArguments(include_num_input_tokens_seen="non_padding")``; without either only samples/s is
    written. Samples come from the epoch
    progress (``state.epoch x`` training set size), which is exact at each epoch end.
    """

    def __init__(self, writer, clock: Callable[[], float] = time.perf_counter):
        super().__init__(writer)
        self.clock = clock
        self.track_tokens = False
        self.num_samples: int | None = None
        self._mark: dict[str, float] = {}
        self._paused = 0.0
        self._pause_from: float | None = None
        self._last_step_end: float | None = None

    def _reset(self, state) -> None:
        self._mark = {"time": self.clock(), "tokens": state.num_input_tokens_seen or 0,
                      "epoch": state.epoch or 0.0, "step": state.global_step}
        self._paused = 0.0

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.track_tokens = getattr(args, "include_num_input_tokens_seen", "no") not in ("no", False, None)
        self._told = False
        try:
            self.num_samples = len(train_dataloader.dataset)
        except (AttributeError, TypeError):
            self.num_samples = None
        self._pause_from = self._last_step_end = None
        self._reset(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._last_step_end = self.clock()

    def _pause(self) -> None:
        if self._pause_from is None:
            self._pause_from = self._last_step_end if self._last_step_end is not None else self.clock()

    def on_evaluate(self, args, state, control, **kwargs):
        self._pause()

    def on_save(self, args, state, control, **kwargs):
        self._pause()

    def _resume(self) -> None:
        if self._pause_from is not None:
            self._paused += self.clock() - self._pause_from
            self._pause_from = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._resume()

    def on_step_begin(self, args, state, control, **kwargs):
        self._resume()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or not self._mark:  # a training log, not eval or the final summary
            return
        now = self.clock()
        elapsed = now - self._mark["time"] - self._paused
        if self._active(state) and elapsed > 0:
            if self.num_samples and state.epoch is not None:
                samples = (state.epoch - self._mark["epoch"]) * self.num_samples
            else:
                samples = ((state.global_step - self._mark["step"]) * args.per_device_train_batch_size
                           * args.gradient_accumulation_steps * args.world_size)
            self.writer.add_scalar("throughput/samples_per_second", samples / elapsed, state.global_step)
            tokens = (state.num_input_tokens_seen or 0) - self._mark["tokens"]
            if self.track_tokens or tokens > 0:  # counted by Trainer, or by ThetaTrainer's collator marks
                self.writer.add_scalar("throughput/tokens_per_second", tokens / elapsed, state.global_step)
            elif not self._told:
                self._told = True
                logger.info("throughput/tokens_per_second needs the token count of ThetaTrainer or of "
                            "TrainingArguments(include_num_input_tokens_seen='non_padding'); only samples/s is logged")
        self._reset(state)


# ---------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryReading:
    """Bytes in use. ``cuda_*`` are None when the run does not use a GPU."""

    rss: int | None = None
    cuda_allocated: int | None = None
    cuda_reserved: int | None = None
    cuda_peak: int | None = None  # torch.cuda.max_memory_allocated since the start of the process
    cuda_total: int | None = None


def read_memory() -> MemoryReading:
    """This process's resident memory and, once CUDA is in use, the current GPU's allocator numbers."""
    rss = None
    try:
        import psutil

        rss = psutil.Process().memory_info().rss
    except ImportError:  # psutil comes with accelerate; fall back to the peak from getrusage (KiB on Linux)
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return MemoryReading(rss=rss)
    device = torch.cuda.current_device()
    return MemoryReading(rss=rss, cuda_allocated=torch.cuda.memory_allocated(device),
                         cuda_reserved=torch.cuda.memory_reserved(device),
                         cuda_peak=torch.cuda.max_memory_allocated(device),
                         cuda_total=torch.cuda.get_device_properties(device).total_memory)


def memory_warning(reading: MemoryReading) -> str:
    return (f"GPU memory peak {reading.cuda_peak / GIB:.1f} GiB is {reading.cuda_peak / reading.cuda_total:.0%} of "
            f"the card's {reading.cuda_total / GIB:.1f} GiB, close to running out; to lower it use a lower "
            "--batch-size with a higher --grad-accum (same effective batch), a smaller --max-seq-length, or "
            "--gradient-checkpointing; --plan shows settings that fit this card")


class MemoryCallback(_WriterCallback):
    """``memory/rss_gib`` and, on a GPU, ``memory/cuda_allocated_gib``, ``memory/cuda_reserved_gib`` and
    ``memory/cuda_peak_gib`` at every training logging step. The first time the CUDA peak passes 90% of
    the card, one warning names the flags that lower it (once per run).

    ``memory_reader`` returns a :class:`MemoryReading`; tests pass a fake one.
    """

    def __init__(self, writer, memory_reader: Callable[[], MemoryReading] = read_memory,
                 warn_fraction: float = MEMORY_WARNING_FRACTION):
        super().__init__(writer)
        self.memory_reader = memory_reader
        self.warn_fraction = warn_fraction
        self.warned = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._active(state) or not logs or "loss" not in logs:
            return
        reading = self.memory_reader()
        step = state.global_step
        if reading.rss is not None:
            self.writer.add_scalar("memory/rss_gib", reading.rss / GIB, step)
        for name in ("allocated", "reserved", "peak"):
            value = getattr(reading, f"cuda_{name}")
            if value is not None:
                self.writer.add_scalar(f"memory/cuda_{name}_gib", value / GIB, step)
        if (not self.warned and reading.cuda_peak is not None and reading.cuda_total
                and reading.cuda_peak >= self.warn_fraction * reading.cuda_total):
            self.warned = True
            logger.warning(memory_warning(reading))


