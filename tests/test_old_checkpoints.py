"""Checkpoint folders written by theta_ai 0.1.0 (the flat module layout, before the reliability changes) still
resume bit for bit and still evaluate. The fixture in tests/data/checkpoint_v0_1/ was written by that version
with tests/data/make_v0_1_checkpoint.py (its docstring says how); it holds the folder as a crash after epoch 1
of 2 left it, and the digest of that version's uninterrupted final weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from theta_ai import EvalSettings, evaluate_model, resolve_config, train
from theta_fixtures import weights_sha256

FIXTURE = Path(__file__).parent / "data" / "checkpoint_v0_1"


def test_a_0_1_checkpoint_resumes_to_the_weights_0_1_would_have_reached(tmp_path):
    root = tmp_path / "old"
    shutil.copytree(FIXTURE, root)
    models = root / "models"
    state = json.loads((models / "theta_checkpoint_epoch_1" / "trainer_state.json").read_text())
    assert Path(state["best_model_checkpoint"]).name == "checkpoint-2"  # what 0.1.0 wrote: a folder that is gone
    values = {"data": [str(root / "train.json")], "val_data": [str(root / "val.json")],
              "model_name": str(root / "base_model"), "epochs": 2.0, "batch_size": 8, "grad_accum": 1,
              "learning_rate": 5e-3, "warmup_steps": 1, "logging_steps": 1, "max_seq_length": 64,
              "checkpoint_dir": str(models), "logdir": str(tmp_path / "logs"), "generation_eval": 0, "resume": "auto"}
    result = train(resolve_config(values))
    expected = json.loads((root / "expected.json").read_text())["final_weights_sha256"]
    assert weights_sha256(result.final_dir) == expected
    assert sorted(p.name for p in models.iterdir()) == ["theta_best", "theta_checkpoint_epoch_1",
                                                        "theta_checkpoint_epoch_2", "theta_final"]
    state = json.loads((models / "theta_checkpoint_epoch_2" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(models / "theta_best")


def test_a_0_1_theta_best_evaluates(tmp_path):
    best = tmp_path / "theta_best"
    shutil.copytree(FIXTURE / "models" / "theta_best", best)
    result = evaluate_model(best, settings=EvalSettings(batch_size=4, max_new_tokens=8))
    assert result.results["num_examples"] == 4  # the validation examples 0.1.0 stored in the folder
    assert len(result.predictions) == 4 and set(result.metrics) >= {"exact_match", "f1", "rougeL"}
