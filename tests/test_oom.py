"""CUDA out of memory: a clear message with the planner's advice, or --auto-batch-size halving the batch.

The out-of-memory error comes from a test double of the training step (these machines have no GPU);
everything around it (Trainer, the retry, the planner's numbers from the real model config) is real.
"""

from __future__ import annotations

import json

import pytest
import torch

from cli_runner import run_main
from theta_ai.config import resolve_config
from theta_ai.training.trainer import ThetaTrainer
from theta_ai.training.run import TrainingOOMError, train
from theta_fixtures import qa_records, tiny_train_config, write_json


@pytest.fixture
def oom_above_batch_2(monkeypatch):
    real_step = ThetaTrainer.training_step
    seen = []

    def step(self, model, inputs, num_items_in_batch=None):
        seen.append(inputs["input_ids"].shape[0])
        if inputs["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test double)")
        return real_step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(ThetaTrainer, "training_step", step)
    return seen


def test_auto_batch_size_halves_the_batch_and_keeps_the_effective_batch(tmp_path, oom_above_batch_2, caplog):
    values = tiny_train_config(tmp_path, n=16, batch_size=8, grad_accum=1, epochs=1.0, auto_batch_size=True)
    result = train(resolve_config(values))
    retries = [r.message for r in caplog.records if "--auto-batch-size retries" in r.message]
    assert retries == [
        "CUDA out of memory at batch 8 x accumulation 1: --auto-batch-size retries with batch 4 x accumulation 2 "
        "(same effective batch)",
        "CUDA out of memory at batch 4 x accumulation 2: --auto-batch-size retries with batch 2 x accumulation 4 "
        "(same effective batch)"]
    args = torch.load(result.final_dir / "training_args.bin", weights_only=False)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 4)
    state = json.loads((result.checkpoints[0] / "trainer_state.json").read_text())
    assert state["global_step"] == 2  # 16 examples / effective batch 8


def test_without_auto_batch_size_the_run_stops_with_advice(tmp_path, oom_above_batch_2):
    values = tiny_train_config(tmp_path, batch_size=8, grad_accum=2, epochs=1.0)
    with pytest.raises(TrainingOOMError) as err:
        train(resolve_config(values))
    message = str(err.value)
    assert message.startswith("CUDA out of memory at batch 8 x accumulation 2 (no CUDA memory statistics on this device);")
    assert "the planner suggests --batch-size" in message  # theta-tiny's real config, priced by the planner
    assert "or pass --auto-batch-size" in message
    assert not list((tmp_path / "models").glob("theta_checkpoint_*"))


def test_cli_prints_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    """theta-train's main() in this process (tests/test_train.py runs the real command's one-line error)."""
    from theta_ai.cli.train import main

    def step(self, model, inputs, num_items_in_batch=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test double)")

    monkeypatch.setattr(ThetaTrainer, "training_step", step)
    write_json(tmp_path / "train.json", qa_records(24))
    proc = run_main(main, "--data", "train.json", "--model-name", "theta-tiny", "--epochs", "1", "--max-seq-length",
                    "64", capsys=capsys, cwd=tmp_path)
    assert proc.returncode == 1
    errors = [line[line.index("theta-train: error:"):] for line in proc.stderr.splitlines() if "theta-train: error:" in line]
    assert len(errors) == 1 and errors[0].startswith("theta-train: error: CUDA out of memory at batch 4 x accumulation 4")
    assert "Traceback" not in proc.stderr


def test_the_retry_starts_after_the_failed_attempt_let_go_of_its_model(tmp_path, oom_above_batch_2):
    """The CLI holds the prepared run while train() retries; the first attempt's model and optimizer must
    still be freed before the retry starts, or it starts with less memory than it thinks."""
    import gc
    import weakref

    from transformers import TrainerCallback

    from theta_ai.training.run import prepare_run

    class SeeWhatIsAlive(TrainerCallback):
        def __init__(self):
            self.models, self.optimizers, self.alive_at_start = [], [], []

        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            gc.collect()
            self.alive_at_start.append([ref() is not None for ref in self.models + self.optimizers])
            self.models.append(weakref.ref(model))

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            if len(self.optimizers) < len(self.models):
                self.optimizers.append(weakref.ref(optimizer))

    seen = SeeWhatIsAlive()
    cfg = resolve_config(tiny_train_config(tmp_path, n=16, batch_size=4, grad_accum=1, epochs=1.0,
                                           auto_batch_size=True))
    run = prepare_run(cfg)  # held here for the whole call, as cli/train.py holds it
    train(cfg, prepared=run, callbacks=[seen])
    assert seen.alive_at_start == [[], [False, False]]  # attempt 2 began with attempt 1's model and optimizer gone
    assert run.loaded.model is None
