"""The overnight script restarts a killed run with --resume auto and finishes it."""

from __future__ import annotations

import os
import re
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
    write_json(tmp_path / "train.json", qa_records(16))  # 2 steps per epoch at batch 8
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


# ---------------------------------------------------------------------------- the .bat twins, as text
# Windows cannot run here, so each .bat is compared with its .sh twin line for line: the settings and their
# defaults, the theta-train command and its flags, every "===" message in order, and what each exit code does.

def _normalize(text: str) -> str:
    """Shell and cmd variable syntax -> {name}: $rc, "$rc", %RC%, !RC!, $((attempt + 1)) and !SHOWN! alike."""
    text = text.replace("$((attempt + 1))", "{shown}")
    text = text.replace("${extra[*]}", "{extra}").replace('"${extra[@]}"', "{extra}")
    text = text.replace("$*", "{args}").replace('"$@"', "{args}").replace("%*", "{args}")
    text = re.sub(r"\$\{?(\w+)\}?|%(\w+)%|!(\w+)!", lambda m: "{" + next(g for g in m.groups() if g).lower() + "}", text)
    return text.replace('"', "")


def sh_script(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    messages = re.findall(r"""echo "=== \$\(date '\+%F %T'\) (.*)" \| tee -a "\$LOG"$""", text, re.M)
    outcomes, code = {}, None
    for line in text.splitlines():
        if m := re.search(r'\[ "\$rc" -eq (\d+) \](?: \|\| \[ "\$rc" -eq (\d+) \])?; then', line):
            code = [int(c) for c in m.groups() if c]
        elif code and (m := re.search(r"echo \"=== \$\(date '\+%F %T'\) (.*)\" \|", line)):
            for c in code:
                outcomes[c] = _normalize(m.group(1))
        elif code and (m := re.match(r"\s*exit (\S+)", line)):
            for c in code:
                outcomes[c] = (outcomes[c], _normalize(m.group(1)))
            code = None
    return {
        "defaults": dict(re.findall(r'^(\w+)="\$\{\w+:-([^}]*)\}"', text, re.M)),
        "command": _normalize(re.search(r"^\s*(\$THETA_TRAIN .*?) 2>&1 \| tee", text, re.M).group(1)),
        "messages": [_normalize(m) for m in messages],
        "outcomes": outcomes,
        "restart_flags": re.search(r"extra=\((.+)\)", text).group(1),
        "wait": _normalize(re.search(r"^\s*sleep (.*)$", text, re.M).group(1)),
        "log": _normalize(re.search(r'^LOG="(logs/overnight_\$\{PRESET\}_)', text, re.M).group(1)),
    }


def bat_script(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    messages = re.findall(r'^\s*set "MSG=(.*)"$', text, re.M)
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^:(\w+)$", line))}

    def outcome_from(start: int):
        message = None
        for line in lines[start:]:
            if m := re.match(r'\s*set "MSG=(.*)"$', line):
                message = _normalize(m.group(1))
            elif m := re.match(r"\s*exit /b (\S+)", line):
                return message, _normalize(m.group(1))

    outcomes = {}
    for i, line in enumerate(lines):
        if m := re.match(r"if %RC%==(\d+) goto (\w+)$", line):
            outcomes[int(m.group(1))] = outcome_from(labels[m.group(2)])
        elif m := re.match(r"if %RC%==(\d+) \($", line):
            outcomes[int(m.group(1))] = outcome_from(i + 1)
    command = re.search(r'powershell -NoProfile -Command "(%THETA_TRAIN% .*?) \$env:EXTRA', text).group(1)
    return {
        "defaults": {k: v for k, v in re.findall(r'^if "%(\w+)%"=="" set \1=(.*)$', text, re.M) if k != "STAMP"},
        "command": _normalize(command.replace("$env:PRESET", "$PRESET") + " ${extra[*]}"),
        "messages": [_normalize(m) for m in messages],
        "outcomes": outcomes,
        "restart_flags": re.search(r"^set EXTRA=(.+)$", text, re.M).group(1),
        "wait": _normalize(re.search(r"^timeout /t (\S+) /nobreak", text, re.M).group(1)),
        "log": _normalize(re.search(r"^set LOG=(logs\\overnight_%PRESET%_)", text, re.M).group(1)).replace("\\", "/"),
    }


def test_bat_twins_match_the_sh_scripts_line_for_line():
    sh, bat = sh_script(ROOT / "examples" / "train_overnight.sh"), bat_script(ROOT / "examples" / "train_overnight.bat")
    assert sh["defaults"] == {"PRESET": "rtx3060", "MAX_RESTARTS": "3", "RESTART_DELAY": "10",
                              "THETA_TRAIN": "theta-train"}
    assert bat["defaults"] == sh["defaults"]
    assert sh["command"] == bat["command"] == "{theta_train} --preset {preset} {args} {extra}"
    # the same six messages (the .bat keeps the two stopping ones under labels at its end: order differs)
    assert len(sh["messages"]) == 6 and sorted(bat["messages"]) == sorted(sh["messages"])
    assert bat["messages"][0] == sh["messages"][0] == "attempt {shown}: {theta_train} --preset {preset} {args} {extra}"
    # the message states the real delay, and the wait uses the same variable
    assert "exit {rc}; restarting with --resume auto in {restart_delay} s ({attempt}/{max_restarts})" in sh["messages"]
    assert sh["wait"] == bat["wait"] == "{restart_delay}"
    assert sh["restart_flags"] == bat["restart_flags"] == "--resume auto"
    assert sh["log"] == bat["log"] == "logs/overnight_{preset}_"
    refused = ("theta-train refused the input (exit {rc}); fix it and run again", "{rc}")
    stopped = ("stopped on request (exit {rc}); continue later with --resume auto", "{rc}")
    assert sh["outcomes"] == {0: ("training finished", "0"), 1: refused, 2: refused, 130: stopped, 143: stopped}
    assert bat["outcomes"] == sh["outcomes"]


def test_enhanced_twins_use_the_same_preset_and_script():
    sh = (ROOT / "examples" / "train_overnight_enhanced.sh").read_text(encoding="utf-8")
    bat = (ROOT / "examples" / "train_overnight_enhanced.bat").read_text(encoding="utf-8")
    assert re.search(r'^PRESET=rtx3060-enhanced exec "\$\(dirname "\$0"\)/train_overnight\.sh" "\$@"$', sh, re.M)
    assert re.search(r"^set PRESET=rtx3060-enhanced$", bat, re.M)
    assert re.search(r'^call "%~dp0train_overnight\.bat" %\*$', bat, re.M)
    assert re.search(r"^setlocal$", bat, re.M)  # PRESET does not leak into the calling console
    usage = lambda text, ext: re.search(rf"train_overnight_enhanced\.{ext} (.*)$", text, re.M).group(1)
    assert usage(sh, "sh") == usage(bat, "bat").replace("\\", "/")
