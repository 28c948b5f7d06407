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
from pathlib import Path

import pytest
import torch

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
    done = subprocess.run([sys.executable, "-c", SHAPES, mode], check=False, env=clean, capture_output=True, text=True,
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


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=1000, n_positions=128, n_embd=64, n_layer=2, n_head=2))


def _llama_lora():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=32))
    return get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                "up_proj", "down_proj"], task_type="CAUSAL_LM"))


def test_the_entries_are_three_kernels_per_weight_shape_and_the_heads():
    # wte 1000x64, wpe 128x64, c_attn 64x192, attn c_proj 64x64, c_fc 64x256, mlp c_proj 256x64: 6 shapes
    assert onednn_cache.kernel_cache_entries(_gpt2()) == 3 * 6 + 6
    # embed/head 1000x64; q 128x64, kv 64x64, o 64x128, gate/up 160x64, down 64x160; LoRA A 8x64, 8x128 (o),
    # 8x160 (down), LoRA B 128x8 (q), 64x8 (k, v, o, down), 160x8 (gate, up): 12 shapes
    assert onednn_cache.kernel_cache_entries(_llama_lora()) == 3 * 12 + 6
    tiny = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    assert onednn_cache.kernel_cache_entries(tiny) == onednn_cache.MIN_KERNEL_CACHE_ENTRIES


KERNELS = textwrap.dedent("""
    import json, sys
    import torch
    sys.path.insert(0, sys.argv[2])
    import test_onednn_cache as here
    from theta_ai.data.collate import answer_positions
    from theta_ai.training.loss import answer_cross_entropy, hidden_states_out
    from theta_ai.training.onednn_cache import bound_kernel_caches, kernel_cache_entries

    model = here._gpt2() if sys.argv[1] == "gpt2" else here._llama_lora()
    entries = kernel_cache_entries(model)
    bound_kernel_caches(entries)
    model.train()

    def micro_batch(length):  # theta's bf16 training step: the fused answer-token head, in 64-position slices
        ids = torch.randint(0, 1000, (4, length), generator=torch.Generator().manual_seed(length))
        labels = ids.clone()
        labels[:, :5] = -100
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with hidden_states_out(model) as head:
                hidden = model(input_ids=ids).logits
            positions, targets = answer_positions(labels)
            loss = answer_cross_entropy(hidden, positions, targets, head, rows=64)
        loss.backward()

    for length in (40, 40, 57):
        print("=== pass", length, flush=True)
        micro_batch(length)
    print("=== entries", entries, flush=True)
""")


@pytest.mark.parametrize("model", ["gpt2", "llama-lora"])
def test_the_bounded_caches_keep_every_kernel_one_micro_batch_reuses(model):
    """ONEDNN_VERBOSE lists every kernel oneDNN builds (a cache miss) or finds (a hit): a second micro-batch of the
    same length finds all of its kernels, so the bound never makes a micro-batch build a kernel twice."""
    clean = {k: v for k, v in os.environ.items() if k not in onednn_cache.CACHE_VARIABLES}
    done = subprocess.run([sys.executable, "-c", KERNELS, model, str(Path(__file__).parent)], check=False,
                          env=dict(clean, ONEDNN_VERBOSE="profile_create"), capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    passes, current = [], None
    for line in done.stdout.splitlines():
        if line.startswith("=== "):
            current = {"misses": 0, "hits": 0, "kernels": set()}
            passes.append(current)
        elif ",create:cache_" in line and current is not None:
            fields = line.split(",")
            current["misses" if ",create:cache_miss," in line else "hits"] += 1
            current["kernels"].add(",".join(fields[4:-1]))
    first, again, longer, _ = passes
    if first["misses"] == 0:
        pytest.skip("this CPU runs bf16 products without oneDNN kernels (no avx512_bf16/AMX): nothing to bound")
    entries = int(done.stdout.rsplit("=== entries", 1)[1].split()[0])
    assert len(first["kernels"]) <= entries  # one micro-batch's kernels fit
    assert first["hits"] > 0  # the layers reuse them within the micro-batch
    assert again["misses"] == 0 and again["hits"] == first["hits"] + first["misses"]
    # a new length builds its own kernels, each once; the head's whole 64-position slices are found again
    assert longer["misses"] == len(longer["kernels"] - first["kernels"]) > 0


@pytest.fixture
def clean_cache_env(monkeypatch):
    for name in onednn_cache.CACHE_VARIABLES:  # setenv first, so the test's end removes what theta_ai writes
        monkeypatch.setenv(name, "1")
        monkeypatch.delenv(name)
    monkeypatch.setattr(onednn_cache, "_set_here", {})


def test_bounding_sets_both_capacities_once_and_a_users_setting_wins(clean_cache_env, monkeypatch):
    assert onednn_cache.bound_kernel_caches(24) is True
    assert [os.environ[n] for n in onednn_cache.CACHE_VARIABLES] == ["24", "24"]
    assert onednn_cache.bound_kernel_caches(40) is True  # its own values: a second run in this process
    assert [os.environ[n] for n in onednn_cache.CACHE_VARIABLES] == ["24", "24"]  # sized at the first product
    assert onednn_cache.kernel_cache_note(True) == (
        "bf16 on the CPU: oneDNN's kernel caches hold one micro-batch's kernels (ONEDNN_PRIMITIVE_CACHE_CAPACITY=24, "
        "LRU_CACHE_CAPACITY=24; oneDNN's 1,024 kept ~0.5 GB more for the whole run); set either variable to "
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
        entries = str(onednn_cache.kernel_cache_entries(run.loaded.model))
        assert seen == [{"ONEDNN_PRIMITIVE_CACHE_CAPACITY": entries, "LRU_CACHE_CAPACITY": entries}]
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
