"""Freed host memory is kept for reuse while a CPU run trains, and given back after (training/host_memory.py).

The allocator's state is read from what it does, not from a flag: a block above glibc's largest mmap threshold
(32 MiB) gets its own mapping by default and comes from the ``[heap]`` of /proc/self/maps when mmap is off. That
reading is only sound in a process whose heap has no large free holes (glibc serves a request from a free heap
chunk that fits even with mmap on), so those checks run in a fresh interpreter; the in-process tests read the
module's state and the wiring into a real Trainer run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest
from transformers import TrainerCallback

from theta_ai import resolve_config, train
from theta_ai.training import host_memory
from theta_ai.training.callbacks import HostMemoryTrimCallback
from theta_ai.training.run import prepare_run
from theta_fixtures import tiny_train_config

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the allocator settings are glibc's (Linux); elsewhere they are a no-op")
ALLOCATOR_ENV = (*host_memory.USER_SETTINGS, "GLIBC_TUNABLES")  # what makes theta_ai leave the allocator alone

PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    from theta_ai.training import host_memory as hm

    def heap():
        for line in Path("/proc/self/maps").read_text().splitlines():
            if line.endswith("[heap]"):
                start, end = line.split()[0].split("-")
                return int(start, 16), int(end, 16)
        return 0, 0

    def from_heap(mib):
        block = torch.empty(mib * 2**20, dtype=torch.uint8)
        start, end = heap()
        return start <= block.data_ptr() < end

    def resident_mib():
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

    out = {}
    exec(sys.argv[1], globals())
    print(json.dumps(out))
""")


def _fresh_process(steps: str, env: dict | None = None) -> dict:
    """Run ``steps`` (Python filling ``out``) in a fresh interpreter with the probe helpers above; its ``out``."""
    clean = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    done = subprocess.run([sys.executable, "-c", PROBE, textwrap.dedent(steps)], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_reuse_takes_large_blocks_from_the_heap_and_returning_puts_the_default_back():
    out = _fresh_process("""
        out["default"] = from_heap(64)
        line = hm.reuse_freed_host_memory()
        out["line"] = line
        out["reusing"] = [hm.reusing_freed_host_memory(), from_heap(64)]
        out["second"] = hm.reuse_freed_host_memory()
        out["returned"] = hm.return_freed_host_memory()
        out["after"] = [hm.reusing_freed_host_memory(), from_heap(128)]  # larger than any hole the 64 MiB left
        out["twice"] = hm.return_freed_host_memory()
    """)
    assert out["default"] is False
    assert out["line"].startswith("host memory: freed buffers are kept for reuse")
    assert "--no-reuse-host-memory" in out["line"]
    assert out["reusing"] == [True, True]
    assert out["second"] is None  # already on: no second note
    assert out["returned"] is True and out["after"] == [False, False]
    assert out["twice"] is False  # twice is harmless


def test_trimming_hands_freed_kept_memory_back_to_the_kernel():
    out = _fresh_process("""
        out["off"] = hm.trim_kept_host_memory()  # reuse off: nothing to trim
        hm.reuse_freed_host_memory()
        keep = torch.ones(8 * 2**20, dtype=torch.uint8)
        block = torch.ones(64 * 2**20, dtype=torch.uint8)
        top = torch.ones(8 * 2**20, dtype=torch.uint8)  # above the freed block: the heap's top stays in use
        del block
        before = resident_mib()
        out["trimmed"] = hm.trim_kept_host_memory()
        out["released_mib"] = before - resident_mib()
    """)
    assert out["off"] is False and out["trimmed"] is True
    assert out["released_mib"] > 0.9 * 64  # the 64 MiB hole's pages went back


def test_allocator_settings_in_the_environment_are_left_alone():
    out = _fresh_process("""
        out["line"] = hm.reuse_freed_host_memory()
        out["state"] = [hm.reusing_freed_host_memory(), from_heap(64)]
    """, env={"MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert out["line"] == ("host memory: MALLOC_TRIM_THRESHOLD_ set in the environment; theta_ai leaves glibc's "
                           "allocator as configured there")
    assert out["state"] == [False, False]


def test_off_glibc_nothing_changes():
    out = _fresh_process("""
        import platform
        platform.libc_ver = lambda *a, **k: ("", "")
        out["line"] = hm.reuse_freed_host_memory()
        out["state"] = [hm.reusing_freed_host_memory(), from_heap(64)]
    """)
    assert out["line"] is None and out["state"] == [False, False]


@pytest.fixture(autouse=True)
def _defaults_after():
    # another test in this worker may have prepared a run it never closed (reuse still on): start from glibc's defaults
    host_memory.return_freed_host_memory(force=True)
    yield
    host_memory.return_freed_host_memory(force=True)


class ReuseProbe(TrainerCallback):
    def __init__(self):
        self.seen: list[bool] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append(host_memory.reusing_freed_host_memory())


@pytest.mark.parametrize("reuse", [True, False, None])
def test_a_cpu_run_reuses_host_memory_while_it_trains_and_gives_it_back(tmp_path, monkeypatch, reuse):
    for name in ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    asked = {} if reuse is None else {"reuse_host_memory": reuse}
    cfg = resolve_config(tiny_train_config(tmp_path, n=16, epochs=1.0, **asked))
    reuse = bool(reuse)  # None: the default, which is off (opt-in)
    run = prepare_run(cfg)
    assert any(n.startswith("host memory: freed buffers are kept") for n in run.notes) is reuse
    trims = []
    monkeypatch.setattr(HostMemoryTrimCallback, "on_step_end", lambda self, *a, **k: trims.append(
        host_memory.trim_kept_host_memory()))
    probe = ReuseProbe()
    train(cfg, prepared=run, callbacks=[probe])
    assert probe.seen == [reuse, reuse]  # 16 examples, batch 8: two optimizer steps
    assert trims == ([True, True] if reuse else [])  # after each step, only while reuse is on
    assert not host_memory.reusing_freed_host_memory()  # given back when the run closed


def test_a_dry_run_leaves_the_allocator_alone(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, n=16, dry_run=True)))
    assert not any(n.startswith("host memory") for n in run.notes)
    assert not host_memory.reusing_freed_host_memory()
