"""Tell an on-the-fly (augmented) dataset which epoch is starting.
"""

from __future__ import annotations

import logging
import math

from transformers import TrainerCallback

logger = logging.getLogger("theta_ai")


class EpochAwareDatasetCallback(TrainerCallback):
    """Tells an on-the-fly dataset (augmentation) which epoch is starting."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor((state.epoch or 0) + 1e-9))
