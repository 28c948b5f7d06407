"""Give the host memory a CPU run kept for reuse back to the kernel after every optimizer step and evaluation
(training/host_memory.py says why: within a step the micro-batches reuse it, across steps it would only grow)."""

from __future__ import annotations

from transformers import TrainerCallback

from theta_ai.training.host_memory import trim_kept_host_memory


class HostMemoryTrimCallback(TrainerCallback):
    """``malloc_trim`` after each optimizer step and each evaluation while ``--reuse-host-memory`` is in effect."""

    def on_step_end(self, args, state, control, **kwargs):
        trim_kept_host_memory()

    def on_evaluate(self, args, state, control, **kwargs):
        trim_kept_host_memory()
