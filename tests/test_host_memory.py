"""Freed host memory is kept for reuse while a CPU run trains, and given back after (training/host_memory.py).

The allocator's state is read from what it does, not from a flag: a 64 MiB block (above glibc's largest mmap
threshold, 32 MiB) gets its own mapping by default and comes from the ``[heap]`` of /proc/self/maps when mmap is off.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from theta_ai import resolve_config, train
from theta_ai.training import host_memory
from theta_ai.training.callbacks import HostMemoryTrimCallback
from theta_ai.training.run import prepare_run
from theta_fixtures import tiny_train_config

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the allocator settings are glibc's (Linux); elsewhere they are a no-op")
BLOCK = 64 * 2**20


def _heap() -> tuple[int, int]:
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith("[heap]"):
            start, end = line.split()[0].split("-")
            return int(start, 16), int(end, 16)
    return 0, 0


def large_block_from_heap() -> bool:
    """Whether a fresh 64 MiB tensor lies in the brk heap (mmap off) rather than in a mapping of its own."""
    block = torch.empty(BLOCK, dtype=torch.uint8)
    start, end = _heap()
    return start <= block.data_ptr() < end


@pytest.fixture(autouse=True)
def _defaults_after():
    # another test in this worker may have prepared a run it never closed (reuse still on): start from glibc's defaults
    host_memory.return_freed_host_memory(force=True)
    yield
    host_memory.return_freed_host_memory(force=True)


def test_reuse_takes_large_blocks_from_the_heap_and_returning_puts_the_default_back(monkeypatch):
    for name in host_memory.USER_SETTINGS + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(name, raising=False)
    assert not large_block_from_heap()
    line = host_memory.reuse_freed_host_memory()
    assert line.startswith("host memory: freed buffers are kept for reuse") and "--no-reuse-host-memory" in line
    assert host_memory.reusing_freed_host_memory() and large_block_from_heap()
    assert host_memory.reuse_freed_host_memory() is None  # already on: no second note
    assert host_memory.return_freed_host_memory() is True
    assert not host_memory.reusing_freed_host_memory() and not large_block_from_heap()
    assert host_memory.return_freed_host_memory() is False  # twice is harmless


def _resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def test_trimming_hands_freed_kept_memory_back_to_the_kernel(monkeypatch):
    for name in host_memory.USER_SETTINGS + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(name, raising=False)
    assert host_memory.trim_kept_host_memory() is False  # reuse off: nothing to trim
    host_memory.reuse_freed_host_memory()
    keep = torch.ones(8 * 2**20, dtype=torch.uint8)  # above the freed block: the heap's top stays in use
    block = torch.ones(BLOCK, dtype=torch.uint8)
    top = torch.ones(8 * 2**20, dtype=torch.uint8)
    del block
    before = _resident_mb()
    assert host_memory.trim_kept_host_memory() is True
    assert before - _resident_mb() > 0.9 * BLOCK / 2**20  # the 64 MiB hole's pages went back
    del keep, top


def test_allocator_settings_in_the_environment_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    line = host_memory.reuse_freed_host_memory()
    assert line == ("host memory: MALLOC_TRIM_THRESHOLD_ set in the environment; theta_ai leaves glibc's allocator "
                    "as configured there")
    assert not host_memory.reusing_freed_host_memory() and not large_block_from_heap()


def test_off_glibc_nothing_changes(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("", ""))
    assert host_memory.reuse_freed_host_memory() is None
    assert not host_memory.reusing_freed_host_memory() and not large_block_from_heap()


class HeapProbe(TrainerCallback):
    def __init__(self):
        self.seen: list[bool] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append(large_block_from_heap())


@pytest.mark.parametrize("reuse", [True, False])
def test_a_cpu_run_reuses_host_memory_while_it_trains_and_gives_it_back(tmp_path, monkeypatch, reuse):
    for name in host_memory.USER_SETTINGS + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(name, raising=False)
    cfg = resolve_config(tiny_train_config(tmp_path, n=16, epochs=1.0, reuse_host_memory=reuse))
    run = prepare_run(cfg)
    assert any(n.startswith("host memory: freed buffers are kept") for n in run.notes) is reuse
    trims = []
    monkeypatch.setattr(HostMemoryTrimCallback, "on_step_end", lambda self, *a, **k: trims.append(
        host_memory.trim_kept_host_memory()))
    probe = HeapProbe()
    train(cfg, prepared=run, callbacks=[probe])
    assert probe.seen == [reuse, reuse]  # 16 examples, batch 8: two optimizer steps
    assert trims == ([True, True] if reuse else [])  # after each step, only while reuse is on
    assert not host_memory.reusing_freed_host_memory() and not large_block_from_heap()


def test_a_dry_run_leaves_the_allocator_alone(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, n=16, dry_run=True)))
    assert not any(n.startswith("host memory") for n in run.notes)
    assert not host_memory.reusing_freed_host_memory() and not large_block_from_heap()
