"""The overnight script restarts a killed run with --resume auto and finishes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from theta_fixtures import qa_records, write_json

ROOT = Path(__file__).resolve().parents[1]

CRASH_ONCE = """#!/usr/bin/env bash
# First call: run theta-train and SIGKILL it as soon as epoch 1 is published. Later calls: run it normally.
if [ ! -f crashed.marker ]; then
  touch crashed.marker
  "{python}" -m theta_ai.cli.train "$@" &
  pid=$!
  for i in $(seq 1 2400); do
    [ -d models/theta_checkpoint_epoch_1 ] && break
    sleep 0.05
  done
  kill -9 $pid
  wait $pid
  exit 137
fi
exec "{python}" -m theta_ai.cli.train "$@"
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_overnight_script_restarts_with_resume_auto(tmp_path):
    write_json(tmp_path / "train.json", qa_records(40))
    wrapper = tmp_path / "crash_once.sh"
    wrapper.write_text(CRASH_ONCE.format(python=sys.executable))
    wrapper.chmod(0o755)
    env = dict(os.environ, THETA_TRAIN=str(wrapper), RESTART_DELAY="0", MAX_RESTARTS="2", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        ["bash", str(ROOT / "examples" / "train_overnight.sh"), "--data", "train.json", "--model-name", "theta-tiny",
         "--epochs", "3", "--batch-size", "8", "--grad-accum", "1", "--warmup-steps", "1", "--max-seq-length", "64"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = next((tmp_path / "logs").glob("overnight_rtx3060_*.log")).read_text()
    assert "exit 137; restarting with --resume auto in 0 s (1/2)" in log
    assert "attempt 2:" in log and "--resume auto" in log.split("attempt 2:")[1].splitlines()[0]
    assert "resuming from models/theta_checkpoint_epoch_" in log
    assert "training finished" in log
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == ["theta_best", "theta_checkpoint_epoch_1", "theta_checkpoint_epoch_2",
                     "theta_checkpoint_epoch_3", "theta_final"]


def test_overnight_script_does_not_restart_on_user_errors(tmp_path):
    env = dict(os.environ, RESTART_DELAY="0", THETA_TRAIN=f"{sys.executable} -m theta_ai.cli.train")
    proc = subprocess.run(["bash", str(ROOT / "examples" / "train_overnight.sh"), "--data", "missing.json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    log = next((tmp_path / "logs").glob("overnight_rtx3060_*.log")).read_text()
    assert "missing.json: does not exist" in log
    assert "theta-train refused the input (exit 1); fix it and run again" in log
    assert "attempt 2" not in log


def test_shipped_yaml_configs_parse():
    from theta_ai.config import resolve_config

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# theta-train --config configs/"), path  # each config says how to run it
        resolve_config(config_file=str(path))
