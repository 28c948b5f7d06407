"""The training dataset when augmentation is on: augment, then tokenize, at every access.

Each item is a pure function of (seed, epoch, index), so every epoch sees a different view,
runs are reproducible, and a resumed run sees exactly the views the interrupted one would have.
The sampler groups by the *unaugmented* lengths (augmentation changes questions by a few tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from theta_ai.data.formats import Example

if TYPE_CHECKING:  # pragma: no cover
    from theta_ai.augment import Augmenter
    from theta_ai.data.tokenize import ExampleFormatter


class AugmentedDataset(torch.utils.data.Dataset):
    """``examples[i]`` augmented for the current epoch and encoded by ``formatter``.

    ``set_epoch`` is called at the start of every epoch (by :class:`EpochAwareDatasetCallback`).
    """

    def __init__(self, examples: list[Example], augmenter: "Augmenter", formatter: "ExampleFormatter",
                 lengths: list[int]):
        self.examples = examples
        self.augmenter = augmenter
        self.formatter = formatter
        self.lengths = lengths
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.augmenter.augment(self.examples[index], self.epoch, index)
        row = self.formatter.encode(example)
        return {"input_ids": row["input_ids"], "labels": row["labels"]}
