"""ThetaTrainer: ``transformers.Trainer`` plus theta_ai's checkpoint naming. Nothing else is overridden.

Trainer writes each checkpoint as ``checkpoint-<step>`` (a staging name that resume never
considers); once every rank has finished writing into it, the main process fsyncs it, adds
``theta_run.json`` and the validation examples, and renames it to ``theta_checkpoint_epoch_N``.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import Trainer

from .checkpoints import RUN_INFO, VALIDATION_FILE, epoch_dir_name, publish, rotate


class ThetaTrainer(Trainer):
    """A Trainer whose epoch checkpoints are published atomically as ``theta_checkpoint_epoch_N``.

    Extra keyword arguments:
        run_info: JSON-able dict written to ``theta_run.json`` in every checkpoint (template, limits, ...).
        validation_jsonl: text of the validation examples, stored with each checkpoint for theta-eval.
        keep_checkpoints: keep only the newest N epoch checkpoints (``--save-total-limit``).
    """

    def __init__(self, *args, run_info: dict | None = None, validation_jsonl: str = "",
                 keep_checkpoints: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_info = run_info or {}
        self.validation_jsonl = validation_jsonl
        self.keep_checkpoints = keep_checkpoints
        self.published: list[Path] = []

    def write_run_files(self, folder: Path) -> None:
        """Write ``theta_run.json`` and the validation examples into a model folder."""
        info = dict(self.run_info, epoch=round(self.state.epoch or 0), global_step=self.state.global_step)
        (folder / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
        if self.validation_jsonl:
            (folder / VALIDATION_FILE).write_text(self.validation_jsonl, encoding="utf-8")

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        run_dir = Path(self._get_output_dir(trial=trial))
        staging = run_dir / f"checkpoint-{self.state.global_step}"
        self.accelerator.wait_for_everyone()  # every rank has written its RNG state into staging
        if self.args.should_save:
            self.write_run_files(staging)
            final = publish(staging, run_dir / epoch_dir_name(round(self.state.epoch)))
            self.published.append(final)
            rotate(run_dir, self.keep_checkpoints)
        self.accelerator.wait_for_everyone()
