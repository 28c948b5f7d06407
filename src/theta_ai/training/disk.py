"""Disk space: how much a run's checkpoints take, the check before each save, and full-disk errors.

A full-weights epoch checkpoint holds the weights and two AdamW moments per trainable parameter
(fp32), so GPT-2 (124M) writes about 0.5 GB of weights + 1 GB of optimizer state per epoch; a LoRA
checkpoint holds only the adapter and its optimizer state. ``theta_best`` and ``theta_final`` hold
weights only.
"""

from __future__ import annotations

import errno
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from theta_ai.errors import DiskSpaceError  # noqa: F401 (defined in errors.py)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def ensure_free_space(checkpoint_dir: str | Path, needed: int) -> None:
    """Raise :class:`DiskSpaceError` when ``checkpoint_dir`` has less than ``needed`` bytes free."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < needed:
        raise DiskSpaceError(
            f"only {free / 2**20:.0f} MiB free in {root}/, but the next checkpoint needs about {needed / 2**20:.0f} MiB; "
            "training stopped before writing it, and the earlier checkpoints are intact. Free some space (or lower "
            "--save-total-limit), then continue with --resume auto")


def is_disk_full(exc: BaseException | None) -> bool:
    """An ``OSError`` for a full disk or quota, also when wrapped (torch.save re-raises it as RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass(frozen=True)
class CheckpointSizes:
    """Bytes on disk of one run's folders, estimated from the model before anything is written."""

    weights: int  # what theta_best / theta_final hold (the adapter alone for LoRA)
    checkpoint: int  # one epoch checkpoint: weights + optimizer state
    epochs: int
    keep: int | None  # epoch checkpoints kept (None: all)

    @property
    def kept_checkpoints(self) -> int:
        return self.epochs if not self.keep else min(self.keep, self.epochs)

    @property
    def total(self) -> int:
        """The peak: the kept epoch checkpoints, one more while the next is written, best and final."""
        return (min(self.kept_checkpoints + 1, self.epochs)) * self.checkpoint + 2 * self.weights

    def describe(self) -> str:
        keep = (f"the newest {self.kept_checkpoints} epoch checkpoints" if self.keep and self.keep < self.epochs
                else f"all {self.epochs} epoch checkpoints")
        line = (f"disk: about {human_size(self.total)} at most ({keep} of {human_size(self.checkpoint)}, "
                f"theta_best and theta_final of {human_size(self.weights)}")
        if self.keep and self.keep < self.epochs:
            every = self.epochs * self.checkpoint + 2 * self.weights
            line += f"; --save-total-limit all would keep every epoch: {human_size(every)}"
        return line + ")"


def human_size(n: int) -> str:
    """``1.50 GiB`` from 1 GiB up, ``12.3 MiB`` below."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def checkpoint_sizes(model, epochs: float, keep: int | None) -> CheckpointSizes:
    """Estimate the on-disk size of a run's checkpoints for ``model`` (a PeftModel saves only its adapter)."""
    params = list(model.parameters())  # parameters() lists a tied weight once, as save_pretrained stores it
    trainable = [p for p in params if p.requires_grad]
    adapter_only = hasattr(model, "peft_config")
    saved = trainable if adapter_only else params
    weights = sum(p.numel() * p.element_size() for p in saved)
    optimizer = sum(2 * p.numel() * 4 for p in trainable)  # AdamW: exp_avg + exp_avg_sq in fp32
    return CheckpointSizes(weights, weights + optimizer, max(1, math.ceil(epochs)), keep)
