"""Crash safety: stop requests, SIGKILL at awkward moments, full disks. Resume must equal an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from theta_ai.training import checkpoints as ckpt
from theta_ai.config import resolve_config
from theta_ai.training.run import train
from theta_fixtures import qa_records, tiny_train_config, write_json


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


class SignalAtStep(TrainerCallback):
    """Sends a real signal to this process at the end of a given optimizer step."""

    def __init__(self, step: int, sig: int = signal.SIGTERM):
        self.step, self.sig = step, sig

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.sig)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    result = train(resolve_config(tiny_train_config(tmp, epochs=3.0, batch_size=4)))
    return result


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_request_saves_mid_epoch_and_resume_matches(uninterrupted, tmp_path, sig):
    values = tiny_train_config(tmp_path, epochs=3.0, batch_size=4)  # 12 steps per epoch
    stopped = train(resolve_config(values), callbacks=[SignalAtStep(17, sig)])
    assert stopped.stopped_by == signal.Signals(sig).name
    assert stopped.final_dir is None and not (tmp_path / "models" / "theta_final").exists()
    # the request arrived after step 17; the step that was running finished and was saved
    assert stopped.last_checkpoint == tmp_path / "models" / "theta_checkpoint_step_18"
    assert [p.name for p in stopped.checkpoints] == ["theta_checkpoint_epoch_1"]
    assert signal.getsignal(sig) is not None and signal.getsignal(sig).__class__.__name__ != "method"

    resumed = train(resolve_config(dict(values, resume="auto")))
    assert resumed.stopped_by is None
    assert same_weights(resumed.final_dir, uninterrupted.final_dir)
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == ["theta_best", "theta_checkpoint_epoch_1", "theta_checkpoint_epoch_2",
                     "theta_checkpoint_epoch_3", "theta_final"]  # the step checkpoint was superseded


def test_full_disk_stops_before_writing_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    real = ckpt.shutil.disk_usage
    calls = {"n": 0}

    def disk_usage(path):
        calls["n"] += 1
        usage = real(path)
        return usage._replace(free=2**20) if calls["n"] > 1 else usage  # 1 MiB left after epoch 1

    monkeypatch.setattr(ckpt.shutil, "disk_usage", disk_usage)
    values = tiny_train_config(tmp_path, epochs=3.0)
    with pytest.raises(ckpt.DiskSpaceError) as err:
        train(resolve_config(values))
    assert str(err.value).startswith(f"only 1 MiB free in {tmp_path / 'models'}/, but the next checkpoint needs about")
    assert "the earlier checkpoints are intact" in str(err.value)
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == ["theta_best", "theta_checkpoint_epoch_1"]
    assert ckpt.latest_checkpoint(tmp_path / "models") == tmp_path / "models" / "theta_checkpoint_epoch_1"


def test_free_space_estimate_uses_the_last_checkpoint_size(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"0" * 1000)
    assert ckpt.folder_size(tmp_path / "a") == 1000
    ckpt.ensure_free_space(tmp_path, 1000)  # plenty free: no error
    with pytest.raises(ckpt.DiskSpaceError):
        ckpt.ensure_free_space(tmp_path, 1 << 62)


def _cli(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "theta_ai.cli.train", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))


def _wait_for(predicate, proc, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


@pytest.mark.extended
def test_sigkill_at_awkward_moments_then_resume_matches(tmp_path):
    """Two theta-train processes killed with SIGKILL, then ``--resume auto``; the uninterrupted reference and the
    last resume are the same settings run by the library in this process (only the killed runs need their own)."""
    write_json(tmp_path / "train.json", qa_records(48))
    args = ["--data", "train.json", "--model-name", "theta-tiny", "--epochs", "3", "--batch-size", "4",
            "--grad-accum", "1", "--warmup-steps", "2", "--learning-rate", "0.002", "--max-seq-length", "64",
            "--generation-eval", "0"]
    values = {"data": [str(tmp_path / "train.json")], "model_name": "theta-tiny", "epochs": 3.0, "batch_size": 4,
              "grad_accum": 1, "warmup_steps": 2, "learning_rate": 0.002, "max_seq_length": 64,
              "generation_eval": 0}  # = args
    train(resolve_config(dict(values, checkpoint_dir=str(tmp_path / "full"), logdir=str(tmp_path / "full_logs"))))

    models = tmp_path / "models"
    # 1) kill -9 the moment Trainer starts writing the first checkpoint (or just after, if the write was quick)
    proc = _cli(args, tmp_path)
    _wait_for(lambda: models.is_dir() and any(p.name.startswith(("checkpoint-", "theta_")) for p in models.iterdir()),
              proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # 2) resume, and kill -9 again in the middle of the next epoch
    proc = _cli(args + ["--resume", "auto"], tmp_path)
    _wait_for(lambda: (models / "theta_checkpoint_epoch_2").exists(), proc)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # 3) resume to the end
    resumed = train(resolve_config(dict(values, checkpoint_dir=str(models), logdir=str(tmp_path / "logs"),
                                        resume="auto")))
    assert resumed.stopped_by is None and resumed.final_dir == models / "theta_final"
    assert not [p for p in models.iterdir() if p.name.startswith("checkpoint-") or p.name.endswith((".old", ".incomplete"))]
    assert same_weights(models / "theta_final", tmp_path / "full" / "theta_final")
    assert same_weights(models / "theta_best", tmp_path / "full" / "theta_best")


def test_cli_sigterm_exits_143_with_a_resume_hint(tmp_path):
    write_json(tmp_path / "train.json", qa_records(48))
    proc = _cli(["--data", "train.json", "--model-name", "theta-tiny", "--epochs", "50", "--batch-size", "2",
                 "--grad-accum", "1", "--max-seq-length", "64", "--generation-eval", "0"], tmp_path)
    assert _wait_for(lambda: (tmp_path / "models" / "theta_checkpoint_epoch_1").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM received: finishing this step and saving a checkpoint" in err
    assert "stopped by SIGTERM after saving models/theta_checkpoint_" in err
    assert "continue with --resume auto" in err and "Traceback" not in err
