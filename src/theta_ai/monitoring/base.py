"""The shared writer-holding callback base and units."""

from __future__ import annotations

import logging

from transformers import TrainerCallback

logger = logging.getLogger("theta_ai")

GIB = 2**30
MEMORY_WARNING_FRACTION = 0.9

# ---------------------------------------------------------------------------- base


class _WriterCallback(TrainerCallback):
    """Holds the run's ``SummaryWriter``; does nothing off the main process."""

    def __init__(self, writer):
        self.writer = writer

    def _active(self, state) -> bool:
        return self.writer is not None and state.is_world_process_zero


