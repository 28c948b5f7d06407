"""oneDNN's per-shape kernel caches are bounded before a CPU run's first bf16 product (training/onednn_cache.py).

The caches' sizes are read once per process, so what they hold is measured in a fresh interpreter: bf16
forward/backward products at 150 different batch lengths; over the last 75 the memory glibc's allocator has
handed out (``mallinfo2``) grows with every new shape, unless the caches are bounded and already full.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from theta_ai import resolve_config, train
from theta_ai.training import onednn_cache, run as training_run
from theta_ai.training.run import prepare_run
from theta_fixtures import tiny_train_config

SHAPES = textwrap.dedent("""
    import ctypes, json, sys
    import torch

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info

    def handed_out_mib():
        info = libc.mallinfo2()
        return (info.uordblks + info.hblkhd) / 2**20

    if sys.argv[1] == "theta":
        from theta_ai.training.onednn_cache import bound_kernel_caches
        bound_kernel_caches()
    torch.manual_seed(0)
    weight = torch.randn(1024, 256, requires_grad=True)
    rows = torch.randn(4 * 300, 256)

    def step(length):
        x = rows[: 4 * length].clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = x @ weight.t()
        y.float().sum().backward()

    for length in range(150, 225):  # a bounded cache is full after these
        step(length)
    before = handed_out_mib()
    for length in range(225, 300):
        step(length)
    print(json.dumps({"grew_mib": handed_out_mib() - before}))
""")


def _grown_mib(mode: str) -> float:
    clean = {k: v for k, v in os.environ.items() if k not in onednn_cache.CACHE_VARIABLES}
    done = subprocess.run([sys.executable, "-c", SHAPES, mode], env=clean, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["grew_mib"]


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="reads glibc's allocator statistics (mallinfo2)")
def test_bounded_caches_stop_bf16_products_keeping_memory_per_shape():
    default = _grown_mib("default")
    if default < 30:
        pytest.skip(f"this CPU's bf16 products kept {default:.1f} MiB over 75 shapes: no oneDNN kernels to bound")
    bounded = _grown_mib("theta")
    assert bounded < 0.1 * default, (default, bounded)


@pytest.fixture
def clean_cache_env(monkeypatch):
    for name in onednn_cache.CACHE_VARIABLES:  # setenv first, so the test's end removes what theta_ai writes
        monkeypatch.setenv(name, "1")
        monkeypatch.delenv(name)
    monkeypatch.setattr(onednn_cache, "_set_here", {})


def test_bounding_sets_both_capacities_once_and_a_users_setting_wins(clean_cache_env, monkeypatch):
    assert onednn_cache.bound_kernel_caches() is True
    assert [os.environ[n] for n in onednn_cache.CACHE_VARIABLES] == ["128", "128"]
    assert onednn_cache.bound_kernel_caches() is True  # its own values: a second run in this process
    assert onednn_cache.kernel_cache_note(True) == (
        "bf16 on the CPU: oneDNN's kernel caches are bounded (ONEDNN_PRIMITIVE_CACHE_CAPACITY=128, "
        "LRU_CACHE_CAPACITY=128; oneDNN's 1,024 kept ~0.5 GB more for the whole run); set either variable to "
        "choose another size")
    monkeypatch.setattr(onednn_cache, "_set_here", {})
    for name in onednn_cache.CACHE_VARIABLES:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "512")
    assert onednn_cache.bound_kernel_caches() is False
    assert os.environ["LRU_CACHE_CAPACITY"] == "512" and "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ
    assert onednn_cache.kernel_cache_note(False) == (
        "bf16 on the CPU: oneDNN's kernel caches as the environment sets them (LRU_CACHE_CAPACITY=512)")
    with pytest.raises(ValueError, match="0 crashes ideep"):
        onednn_cache.bound_kernel_caches(0)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_a_cpu_run_bounds_the_caches_before_its_precision_probe(tmp_path, clean_cache_env, monkeypatch, precision):
    seen = []
    probe = training_run.cpu_bf16_choice

    def watched(*args, **kwargs):
        seen.append({n: os.environ.get(n) for n in onednn_cache.CACHE_VARIABLES})
        return probe(*args, **kwargs)

    monkeypatch.setattr(training_run, "cpu_bf16_choice", watched)
    cfg = resolve_config(tiny_train_config(tmp_path, n=16, epochs=1.0, precision=precision))
    with prepare_run(cfg) as run:
        assert seen == [{"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128", "LRU_CACHE_CAPACITY": "128"}]
        notes = [n for n in run.notes if "oneDNN" in n]
        assert len(notes) == (1 if precision == "bf16" else 0)  # fp32 products do not use the caches
        assert run.training_args.bf16 is (precision == "bf16")
        if precision == "bf16":
            result = train(cfg, prepared=run)
            assert result.metrics["train_loss"] > 0


def test_a_dry_run_leaves_the_environment_alone(tmp_path, clean_cache_env):
    with prepare_run(resolve_config(tiny_train_config(tmp_path, n=16, dry_run=True, precision="bf16"))) as run:
        assert not any("oneDNN" in n for n in run.notes)
    assert onednn_cache.user_kernel_cache_settings() == []
