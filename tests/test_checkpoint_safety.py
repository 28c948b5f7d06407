"""What theta-train may and may not do to a checkpoint folder: refuse to mix runs, touch only its own names,
write nothing in a dry run, keep every model file in theta_best, bound the disk it uses, keep Trainer's
best-model bookkeeping pointing at a folder that exists, one run per folder, and skip damaged checkpoints."""

from __future__ import annotations

import json
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
from theta_ai.config import ConfigError, resolve_config
from theta_ai.training.run import prepare_run, train
from theta_fixtures import qa_records, tiny_train_config, write_json


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class StopAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------------------- runs never mix


def test_a_fresh_run_is_refused_where_only_a_mid_epoch_checkpoint_lies(tmp_path):
    values = tiny_train_config(tmp_path, epochs=2.0, batch_size=4)  # 12 steps per epoch
    stopped = train(resolve_config(values), callbacks=[StopAtStep(3)])
    models = tmp_path / "models"
    assert stopped.stopped_by == "SIGTERM" and listing(models) == ["theta_checkpoint_step_4"]
    with pytest.raises(ConfigError) as err:
        prepare_run(resolve_config(values))
    assert str(err.value) == (f"{models}/ already holds checkpoints of an earlier run (newest: theta_checkpoint_step_4). "
                              "Continue it with --resume auto, or write this run elsewhere with --checkpoint-dir")
    assert listing(models) == ["theta_checkpoint_step_4"]


def test_recovery_touches_only_the_names_theta_ai_writes(tmp_path):
    models = tmp_path / "models"
    plain = models / "checkpoint-5"  # a plain Trainer run's checkpoint: not ours
    plain.mkdir(parents=True)
    (plain / "model.safetensors").write_bytes(b"plain trainer weights")
    for name in ("notes.old", "export.incomplete", "theta_best.incomplete", "theta_checkpoint_epoch_2.old"):
        (models / name).mkdir()
    ours = models / "checkpoint-9"
    ckpt.mark_staging(ours)  # what ThetaTrainer does before Trainer writes a checkpoint
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, resume="auto")))
    run.close()
    assert listing(models) == ["checkpoint-5", "export.incomplete", "notes.old", "theta_checkpoint_epoch_2"]
    assert (plain / "model.safetensors").read_bytes() == b"plain trainer weights"
    assert [n for n in run.notes if "checkpoint" in n or "theta_best" in n] == [
        f"removed incomplete checkpoint {models / 'checkpoint-9'} (a crash interrupted its save)",
        f"removed incomplete checkpoint {models / 'theta_best.incomplete'} (a crash interrupted its save)",
        f"restored {models / 'theta_checkpoint_epoch_2'} from theta_checkpoint_epoch_2.old (a crash interrupted its "
        "replacement)",
        f"--resume auto: {models / 'theta_checkpoint_epoch_2'} is damaged (no trainer_state.json); no complete "
        "checkpoint is left, starting a fresh run"]


def test_a_dry_run_writes_nothing_and_says_what_recovery_would_do(tmp_path):
    write_json(tmp_path / "train.json", qa_records(24))
    models = tmp_path / "models"
    ckpt.mark_staging(models / "checkpoint-3")
    (models / "theta_best.old").mkdir()
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "theta_ai.cli.train", "--data", "train.json", "--model-name",
                           "theta-tiny", "--dry-run", "--resume", "auto", "--lora"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # no logs/, no theta_base/
    assert "--dry-run: would remove incomplete checkpoint models/checkpoint-3 (a crash interrupted its save)" in proc.stderr
    assert "--dry-run: would restore models/theta_best from theta_best.old" in proc.stderr


# ---------------------------------------------------------------------------- what theta_best holds


def test_theta_best_gets_every_model_file_but_the_training_state(tmp_path):
    checkpoint = tmp_path / "models" / "theta_checkpoint_epoch_1"
    files = {"config.json": "{}", "model.safetensors": "w", "tokenizer.model": "sp", "added_tokens.json": "{}",
             "modeling_custom.py": "# trust_remote_code model", "configuration_custom.py": "#",
             "extra/notes.txt": "x", "theta_run.json": "{}",
             "optimizer.pt": "o", "scheduler.pt": "s", "scaler.pt": "s", "rng_state.pth": "r", "rng_state_1.pth": "r",
             "trainer_state.json": "{}", "training_args.bin": "a"}
    for name, text in files.items():
        (checkpoint / name).parent.mkdir(parents=True, exist_ok=True)
        (checkpoint / name).write_text(text)
    best = ckpt.publish_best(checkpoint, tmp_path / "models" / "theta_best", {"epoch": 1})
    assert sorted(str(p.relative_to(best)) for p in best.rglob("*") if p.is_file()) == [
        "added_tokens.json", "config.json", "configuration_custom.py", "extra/notes.txt", "model.safetensors",
        "modeling_custom.py", "theta_best.json", "theta_run.json", "tokenizer.model"]
    # hard links, not copies: publishing theta_best every epoch writes no model bytes
    assert (best / "model.safetensors").stat().st_ino == (checkpoint / "model.safetensors").stat().st_ino
    with_optimizer = ckpt.publish_best(checkpoint, tmp_path / "models" / "theta_best", {"epoch": 1}, with_optimizer=True)
    assert {"optimizer.pt", "scheduler.pt", "scaler.pt"} <= set(listing(with_optimizer))
    assert "trainer_state.json" not in listing(with_optimizer)


# ---------------------------------------------------------------------------- disk


def test_epoch_checkpoints_are_bounded_by_default_and_all_keeps_every_one(tmp_path):
    from theta_ai.training.disk import checkpoint_sizes

    cfg = resolve_config(tiny_train_config(tmp_path, epochs=4.0))
    assert cfg.save_total_limit == 3
    result = train(cfg)
    assert listing(tmp_path / "models") == ["theta_best", "theta_checkpoint_epoch_2", "theta_checkpoint_epoch_3",
                                            "theta_checkpoint_epoch_4", "theta_final"]
    assert resolve_config({"save_total_limit": "all"}).save_total_limit == 0
    with pytest.raises(ConfigError, match="save_total_limit = 'some'"):
        resolve_config({"save_total_limit": "some"})
    # the estimate the banner prints is what a checkpoint really takes (within 15%: tokenizer and JSON files)
    estimate = checkpoint_sizes(prepare_run(resolve_config(dict(tiny_train_config(tmp_path / "b"), epochs=4.0))).loaded.model,
                                4, 3)
    real = ckpt.folder_size(result.checkpoints[-1])
    assert 0.85 < estimate.checkpoint / real < 1.15, (estimate, real)


def test_banner_says_how_much_disk_the_run_takes(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, epochs=100.0)))
    run.close()
    params = sum(p.numel() for p in run.loaded.model.parameters())
    weights, checkpoint = params * 4, params * 4 * 3  # fp32 weights + two fp32 AdamW moments
    mib = 2**20  # theta-tiny is small: MiB (GiB from 1 GiB up)
    assert run.banner()[-1] == (
        f"disk: about {(4 * checkpoint + 2 * weights) / mib:.1f} MiB at most (the newest 3 epoch checkpoints of "
        f"{checkpoint / mib:.1f} MiB, theta_best and theta_final of {weights / mib:.1f} MiB; --save-total-limit all "
        f"would keep every epoch: {(100 * checkpoint + 2 * weights) / mib:.1f} MiB)")


def test_gpt2_124m_run_of_the_rtx3060_preset_is_priced_like_the_issue_says():
    from theta_ai.training.disk import checkpoint_sizes
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config())
    sizes = checkpoint_sizes(model, 100, None)
    assert round(sizes.weights / 1e9, 2) == 0.50 and round(sizes.checkpoint / 1e9, 2) == 1.49
    assert round(sizes.total / 1e9) == 150  # 100 kept epoch checkpoints: what bounding by default avoids


def test_lora_free_space_check_counts_only_the_adapter(tmp_path, monkeypatch):
    real = ckpt.shutil.disk_usage
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: real(path)._replace(free=2 * 2**20))  # 2 MiB free
    result = train(resolve_config(tiny_train_config(tmp_path, epochs=1.0, lora=True)))
    assert [p.name for p in result.checkpoints] == ["theta_checkpoint_epoch_1"]


# ---------------------------------------------------------------------------- Trainer's best-model bookkeeping


def test_best_model_checkpoint_names_a_folder_that_exists(tmp_path, caplog):
    # greater_is_better with the loss makes epoch 1 (the highest validation loss) the "best": the final model of a
    # load_best_model_at_end run must then be epoch 1's weights, loaded from the folder Trainer's state names.
    values = tiny_train_config(tmp_path, epochs=2.0)
    cfg = resolve_config(values)
    cfg.training_args.update(load_best_model_at_end=True, greater_is_better=True)
    result = train(cfg)
    models = tmp_path / "models"
    for epoch in (1, 2):
        state = json.loads((models / f"theta_checkpoint_epoch_{epoch}" / "trainer_state.json").read_text())
        assert state["best_model_checkpoint"] == str(models / "theta_best") and state["best_global_step"] == 6
    assert json.loads((models / "theta_best" / "theta_best.json").read_text())["global_step"] == 6
    assert same_weights(result.final_dir, models / "theta_checkpoint_epoch_1")
    assert not same_weights(result.final_dir, models / "theta_checkpoint_epoch_2")
    caplog.clear()
    resumed = prepare_run(resolve_config(dict(values, resume=str(models / "theta_checkpoint_epoch_1"), epochs=2.0)))
    resumed.close()
    assert not [r for r in caplog.records if "does not exist anymore" in r.getMessage()]


# ---------------------------------------------------------------------------- one run per folder


def test_a_second_run_on_the_same_folder_is_refused_and_a_killed_run_leaves_no_lock(tmp_path):
    from theta_ai.training.lock import acquire

    write_json(tmp_path / "train.json", qa_records(48))
    args = [sys.executable, "-m", "theta_ai.cli.train", "--data", "train.json", "--model-name", "theta-tiny",
            "--batch-size", "2", "--grad-accum", "1", "--max-seq-length", "64", "--checkpoint-dir", "models"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    first = subprocess.Popen(args + ["--epochs", "50"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "logs").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)  # the log folder appears after the lock is taken
        assert first.poll() is None, first.stderr.read()
        started = time.time()
        second = subprocess.run(args + ["--epochs", "1", "--resume", "auto"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines()[-1] == (
            "theta-train: error: models/ is in use by another theta-train run that is still running; wait for it to "
            "finish or stop it, or write this run elsewhere with --checkpoint-dir")
        assert time.time() - started < 60  # refused before any model is loaded or any step is taken
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    lock = acquire(tmp_path / "models")  # the killed run's lock died with it
    lock.release()


def _other_process_locks(folder) -> str:
    """Try to take ``folder``'s run lock in another process: "" when it could, else the error's class name."""
    code = (f"from theta_ai.training.lock import acquire\ntry:\n    acquire({str(folder)!r}).release()\n"
            "except Exception as e:\n    print(type(e).__name__)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    from theta_ai.training.lock import RunLockedError, acquire

    with acquire(tmp_path / "m"), acquire(tmp_path / "m"):
        assert _other_process_locks(tmp_path / "m") == RunLockedError.__name__
    assert _other_process_locks(tmp_path / "m") == ""
    assert listing(tmp_path / "m") == []  # no lock file left behind (POSIX: the folder itself is locked)


def test_a_prepared_run_used_as_a_context_lets_go_of_its_folder(tmp_path):
    from theta_ai.training.lock import RunLockedError

    cfg = resolve_config(tiny_train_config(tmp_path, n=16))
    with prepare_run(cfg) as run:
        assert run.lock is not None
        held = _other_process_locks(cfg.checkpoint_dir)
    assert held == RunLockedError.__name__  # another process was refused while the run was prepared
    assert run.lock is None
    assert _other_process_locks(cfg.checkpoint_dir) == ""  # and may take the folder once the with-block ended
    train(cfg, prepared=prepare_run(cfg))  # this process too: a new run on the folder is not refused


# ---------------------------------------------------------------------------- damaged checkpoints


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train(resolve_config(tiny_train_config(tmp_path_factory.mktemp("full"), epochs=3.0)))


def _rewrite_truncated(path: Path, keep: int) -> None:
    """A save cut short: a new, shorter file under the name (published files are hard-linked, never rewritten)."""
    data = path.read_bytes()[:keep]
    path.unlink()
    path.write_bytes(data)


def _truncate(folder: Path) -> str:
    size = (folder / "model.safetensors").stat().st_size
    _rewrite_truncated(folder / "model.safetensors", size // 2)
    return f"model.safetensors is truncated ({size // 2} bytes of {size})"


def _drop_state(folder: Path) -> str:
    (folder / "trainer_state.json").unlink()
    return "no trainer_state.json"


def _truncate_optimizer(folder: Path) -> str:
    path = folder / "optimizer.pt"
    _rewrite_truncated(path, path.stat().st_size - 100)
    return "optimizer.pt is truncated or not a torch.save archive"


@pytest.mark.parametrize("damage", [_truncate, _drop_state, _truncate_optimizer])
def test_resume_auto_skips_a_damaged_newest_checkpoint(uninterrupted, tmp_path, damage):
    import shutil

    values = tiny_train_config(tmp_path, epochs=3.0)  # the uninterrupted run's settings and data, in tmp_path
    models = tmp_path / "models"
    # what that run left, but for theta_final: a copy of the uninterrupted run's checkpoints (the same run)
    shutil.copytree(uninterrupted.checkpoint_dir, models, ignore=shutil.ignore_patterns("theta_final"))
    assert listing(models) == ["theta_best", "theta_checkpoint_epoch_1", "theta_checkpoint_epoch_2",
                               "theta_checkpoint_epoch_3"]
    problem = damage(models / "theta_checkpoint_epoch_3")
    run = prepare_run(resolve_config(dict(values, resume="auto")))
    assert run.resume_from == models / "theta_checkpoint_epoch_2"
    assert [n for n in run.notes if "damaged" in n] == [
        f"--resume auto: {models / 'theta_checkpoint_epoch_3'} is damaged ({problem}); resuming from "
        "theta_checkpoint_epoch_2, the newest complete checkpoint"]
    resumed = train(run.cfg, prepared=run)
    assert same_weights(resumed.final_dir, uninterrupted.final_dir)
    assert ckpt.checkpoint_problem(models / "theta_checkpoint_epoch_3") is None  # rewritten whole


def test_safetensors_check_reads_headers_only(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(4, 4)}, str(tmp_path / "w.safetensors"))
    assert ckpt.safetensors_problem(tmp_path / "w.safetensors") is None
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 4)
    assert ckpt.safetensors_problem(tmp_path / "bad.safetensors").startswith("has an unreadable header")
