"""Checkpoint folders written by theta_ai 0.1.0 (the flat module layout, before the reliability changes) still
resume to the weights an uninterrupted run reaches (bit for bit on the machine the fixture was written on, within
float rounding on others) and still evaluate. The fixture in tests/data/checkpoint_v0_1/ was written by that version
with tests/data/make_v0_1_checkpoint.py (its docstring says how); it holds the folder as a crash after epoch 1
of 2 left it, and the digest of that version's uninterrupted final weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

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
    # The same run uninterrupted, by this version on this machine. Bit for bit it matches only where the fixture
    # was recorded: the CPU's kernels (AMD or Intel, the number of threads) decide the last bits of every step.
    fresh = train(resolve_config(dict(values, resume=None, checkpoint_dir=str(tmp_path / "fresh"),
                                      logdir=str(tmp_path / "fresh_logs"))))
    resumed_weights, fresh_weights = load_file(str(result.final_dir / "model.safetensors")), \
        load_file(str(fresh.final_dir / "model.safetensors"))
    base = load_file(str(root / "base_model" / "model.safetensors"))
    assert resumed_weights.keys() == fresh_weights.keys()
    for key, tensor in fresh_weights.items():
        torch.testing.assert_close(resumed_weights[key], tensor, rtol=1e-4, atol=1e-5, msg=key)
    assert any(not torch.equal(resumed_weights[k], base[k]) for k in base if k in resumed_weights)  # it trained
    expected = json.loads((root / "expected.json").read_text())["final_weights_sha256"]
    if weights_sha256(fresh.final_dir) == expected:  # the machine (and thread count) the fixture was written on
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
