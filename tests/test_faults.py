"""Faults a long night meets, each with a real ``kill -9`` (SIGKILL of a real training process) or a disk that
fills up in the middle of a write; the next ``--resume auto`` must end with the weights of an uninterrupted run,
bit for bit, and no folder that looks complete may be half-written.

The faulty runs are this file run as a script: ``python tests/test_faults.py VALUES.json FAULT`` calls
theta_ai's library (``resolve_config`` + ``train``) with the fault armed at an exact moment. The uninterrupted
reference run and the ``--resume auto`` runs after a kill are the same library calls made in the test process
(no process of theirs is killed, so they need none of their own).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
EPOCHS = 3
STEPS_PER_EPOCH = 6  # 48 examples, batch 8


# ---------------------------------------------------------------------------- the faulty process (script side)


def _kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(fault: str) -> list:
    """Install ``fault``; returns extra Trainer callbacks."""
    from transformers import TrainerCallback

    from theta_ai.training import checkpoints as ckpt
    from theta_ai.training.trainer import ThetaTrainer

    if fault == "best-swap":
        # Between the two renames of the last epoch's theta_best swap (the second swap: epoch 1 has no old best
        # to move aside): the old best moved aside, the new one not yet in, and no epoch left to train after it.
        real_replace = ckpt.os.replace
        swaps = []

        def replace(src, dst):
            real_replace(src, dst)
            if Path(dst).name == "theta_best.old":
                swaps.append(dst)
                if len(swaps) == EPOCHS - 1:
                    _kill_now()

        ckpt.os.replace = replace
    elif fault == "final-save":
        # theta_final half-written: the weights file cut in half, then the process dies.
        real_save = ThetaTrainer.save_model

        def save_model(self, output_dir=None, _internal_call=False):
            real_save(self, output_dir, _internal_call)
            if output_dir and Path(output_dir).name.startswith("theta_final"):
                weights = Path(output_dir) / "model.safetensors"
                weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
                _kill_now()

        ThetaTrainer.save_model = save_model
    elif fault == "evaluation":
        class KillDuringEvaluation(TrainerCallback):
            def on_prediction_step(self, args, state, control, **kwargs):
                if state.global_step == 2 * STEPS_PER_EPOCH:
                    _kill_now()

        return [KillDuringEvaluation()]
    elif fault != "none":
        raise SystemExit(f"unknown fault {fault}")
    return []


def script_main(values_file: str, fault: str) -> int:
    from theta_ai.config import resolve_config
    from theta_ai.training.run import train

    values = json.loads(Path(values_file).read_text())
    train(resolve_config(values), callbacks=arm(fault))
    return 0


# ---------------------------------------------------------------------------- test side


def run_script(values: dict, fault: str, tmp: Path) -> subprocess.CompletedProcess:
    values_file = tmp / f"values-{fault}-{values.get('resume') or 'fresh'}.json"
    values_file.write_text(json.dumps(values))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", PYTHONPATH=os.pathsep.join(
        [str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(HERE), str(values_file), fault], capture_output=True, text=True,
                          timeout=600, env=env)


def values_for(tmp: Path, **overrides) -> dict:
    from theta_fixtures import tiny_train_config

    # no generated answers at the evaluations: the faults strike in the saves and the loss evaluation, and each
    # killed process would pay the text metrics' imports
    return tiny_train_config(tmp, epochs=float(EPOCHS), generation_eval=0, **overrides)


def train_here(values: dict):
    """The script's ``resolve_config`` + ``train`` with no fault, in this process."""
    from theta_ai.config import resolve_config
    from theta_ai.training.run import train

    return train(resolve_config(values))


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = tensors(a), tensors(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f"{a} and {b} differ"


def assert_nothing_half_written(models: Path) -> None:
    from theta_ai.training import checkpoints as ckpt

    names = sorted(p.name for p in models.iterdir())
    assert not [n for n in names if n.startswith("checkpoint-") or n.endswith((".old", ".incomplete"))], names
    for folder in models.iterdir():
        for weights in ckpt.weight_files(folder):
            assert ckpt.safetensors_problem(weights) is None, weights
        if folder.name.startswith("theta_checkpoint_"):
            assert ckpt.checkpoint_problem(folder) is None, folder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    train_here(values_for(tmp))
    return tmp / "models"


@pytest.mark.parametrize("fault", [pytest.param("best-swap", marks=pytest.mark.extended), "final-save",
                                   pytest.param("evaluation", marks=pytest.mark.extended)])
def test_kill_9_then_resume_auto_ends_like_an_uninterrupted_run(uninterrupted, tmp_path, fault):
    values = values_for(tmp_path)
    killed = run_script(values, fault, tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    models = tmp_path / "models"
    left = sorted(p.name for p in models.iterdir())
    expected_left = {
        "best-swap": ["theta_best.incomplete", "theta_best.old", "theta_checkpoint_epoch_1", "theta_checkpoint_epoch_2",
                      "theta_checkpoint_epoch_3"],
        "final-save": ["theta_best", "theta_checkpoint_epoch_1", "theta_checkpoint_epoch_2",
                       "theta_checkpoint_epoch_3", "theta_final.incomplete"],
        "evaluation": ["theta_best", "theta_checkpoint_epoch_1"],
    }[fault]
    assert left == expected_left  # the fault struck where it was meant to

    train_here(dict(values, resume="auto"))
    assert sorted(p.name for p in models.iterdir()) == sorted(p.name for p in uninterrupted.iterdir())
    assert_nothing_half_written(models)
    assert_same_weights(models / "theta_final", uninterrupted / "theta_final")
    assert_same_weights(models / "theta_best", uninterrupted / "theta_best")
    best = json.loads((models / "theta_best" / "theta_best.json").read_text())
    assert best["global_step"] == json.loads((uninterrupted / "theta_best" / "theta_best.json").read_text())["global_step"]


def test_disk_full_while_writing_a_checkpoint_stops_cleanly_and_resume_continues(uninterrupted, tmp_path,
                                                                                  monkeypatch):
    import transformers.modeling_utils as modeling_utils

    from theta_ai.config import resolve_config
    from theta_ai.training.disk import DiskSpaceError
    from theta_ai.training.run import train

    real_save = modeling_utils.safe_save_file

    def save_file(tensors, filename, metadata=None):
        if Path(filename).parent.name == f"checkpoint-{2 * STEPS_PER_EPOCH}":
            with open(filename, "wb") as fh:  # the disk fills up part-way through the weights
                fh.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(modeling_utils, "safe_save_file", save_file)
    values = values_for(tmp_path)
    with pytest.raises(DiskSpaceError) as err:
        train(resolve_config(values))
    models = tmp_path / "models"
    assert str(err.value) == (
        f"the disk holding {models}/ filled up while writing the checkpoint of step 12 ([Errno 28] No space left on "
        f"device: '{models / 'checkpoint-12' / 'model.safetensors'}'); that checkpoint was removed and the earlier "
        "ones are intact. Free some space (or lower --save-total-limit), then continue with --resume auto")
    assert sorted(p.name for p in models.iterdir()) == ["theta_best", "theta_checkpoint_epoch_1"]
    assert_nothing_half_written(models)

    monkeypatch.setattr(modeling_utils, "safe_save_file", real_save)  # space freed
    resumed = train(resolve_config(dict(values, resume="auto")))
    assert resumed.last_checkpoint == models / f"theta_checkpoint_epoch_{EPOCHS}"
    assert_same_weights(resumed.final_dir, uninterrupted / "theta_final")
    assert_same_weights(resumed.best_dir, uninterrupted / "theta_best")


def test_cli_says_disk_full_in_one_line(tmp_path):
    from theta_fixtures import qa_records, write_json

    write_json(tmp_path / "train.json", qa_records(24))
    script = tmp_path / "full_disk.py"
    script.write_text(
        "import errno, sys\n"
        "import transformers.modeling_utils as m\n"
        "def full(*a, **k):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', a[1])\n"
        "m.safe_save_file = full\n"
        "from theta_ai.cli.train import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, str(script), "--data", "train.json", "--model-name", "theta-tiny",
                           "--epochs", "1", "--max-seq-length", "64", "--batch-size", "8", "--grad-accum", "1",
                           "--generation-eval", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("theta-train: error:")]
    assert len(errors) == 1 and errors[0].startswith("theta-train: error: the disk holding models/ filled up while "
                                                     "writing the checkpoint of step 3")
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == []


if __name__ == "__main__":
    sys.exit(script_main(*sys.argv[1:]))
