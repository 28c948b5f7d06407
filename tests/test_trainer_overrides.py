"""The private Trainer methods ThetaTrainer overrides: fail loudly when transformers changes them.

Checked against transformers 5.24. If one of these fails after upgrading transformers, read the new
Trainer method and the comment above ThetaTrainer's override before changing the expected value.
"""

from __future__ import annotations

import inspect

from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from theta_ai.training.trainer import ThetaTrainer


def parameters(method) -> list[str]:
    return list(inspect.signature(method).parameters)


def test_save_checkpoint_signature_and_staging_name_are_what_the_override_expects():
    assert parameters(Trainer._save_checkpoint) == ["self", "model", "trial"]
    assert parameters(Trainer._get_output_dir) == ["self", "trial"]
    # ThetaTrainer marks and later publishes <output_dir>/checkpoint-<global_step>, the folder Trainer writes
    assert PREFIX_CHECKPOINT_DIR == "checkpoint"
    source = inspect.getsource(Trainer._save_checkpoint)
    assert 'checkpoint_folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"' in source
    # the value ThetaTrainer corrects after Trainer set it to the staging name
    assert "self.state.best_model_checkpoint = best_checkpoint_dir" in source
    assert parameters(ThetaTrainer._save_checkpoint) == parameters(Trainer._save_checkpoint)
