"""QLoRA (--load-in-4bit / --load-in-8bit): the flags, their errors, the planner's k-bit prices and the merge into an
unquantised base. The CUDA path itself (bitsandbytes' kernels) needs a GPU with the qlora extra installed: it is
not exercised here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from theta_ai.config import ConfigError, resolve_config
from theta_ai.model.quantize import check_kbit_request, check_kbit_support, kbit_bits, kbit_load_kwargs
from theta_ai.planner import LoraSpec, estimate_memory, plan, plan_report
from theta_ai.planner.estimate import KBIT_WEIGHT_BYTES
from theta_ai.planner.models import model_config, model_stats
from theta_fixtures import build_tiny_llama, qa_records, write_json

BIN = Path(sys.executable).parent
LLAMA_3B = "meta-llama/Llama-3.2-3B-Instruct"


def test_the_flags_parse_into_bits():
    assert kbit_bits(resolve_config({"load_in_4bit": True, "lora": True})) == 4
    assert kbit_bits(resolve_config({"load_in_8bit": True, "lora": True})) == 8
    assert kbit_bits(resolve_config({})) is None
    with pytest.raises(ConfigError, match="^--load-in-4bit and --load-in-8bit exclude each other: choose one$"):
        kbit_bits(resolve_config({"load_in_4bit": True, "load_in_8bit": True}))


@pytest.mark.parametrize("kwargs, message", [
    (dict(lora=False, model_name="m", gguf=False),
     "--load-in-4bit trains LoRA adapters on a frozen 4-bit base (QLoRA); quantised weights cannot be fine-tuned "
     "themselves: add --lora"),
    (dict(lora=True, model_name="theta-tiny", gguf=False),
     "--load-in-4bit: theta-tiny is built in fp32 for the quick start; quantise a pretrained model folder or hub id "
     "instead (e.g. --model-name Qwen/Qwen2.5-1.5B-Instruct)"),
    (dict(lora=True, model_name="m.gguf", gguf=True),
     "--load-in-4bit: a .gguf file loads dequantized and cannot be re-quantised by bitsandbytes; start from the "
     "model's safetensors folder, or drop --load-in-4bit"),
])
def test_requests_a_k_bit_base_cannot_honour_are_refused(kwargs, message):
    with pytest.raises(ConfigError) as err:
        check_kbit_request(4, **kwargs)
    assert str(err.value) == message
    check_kbit_request(None, **kwargs)  # nothing asked, nothing checked


def test_the_machine_check_names_what_is_missing():
    with pytest.raises(ConfigError) as err:
        check_kbit_support(4, cuda=False, package=True)
    assert str(err.value) == ("--load-in-4bit needs a CUDA GPU (bitsandbytes' 4-bit kernels); this machine has none: "
                              "drop --load-in-4bit to train LoRA on the full-precision model")
    with pytest.raises(ConfigError) as err:
        check_kbit_support(8, cuda=True, package=False)
    assert str(err.value) == '--load-in-8bit needs bitsandbytes, which is not installed: pip install "theta_ai[qlora]"'
    check_kbit_support(4, cuda=True, package=True)


def test_the_4bit_load_is_nf4_with_double_quantisation_on_this_process_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    kwargs = kbit_load_kwargs(4)
    q = kwargs["quantization_config"]
    expected = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    assert (q.load_in_4bit, q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant) == (True, "nf4", True)
    assert q.bnb_4bit_compute_dtype == expected and kwargs["dtype"] == expected
    assert kwargs["device_map"] == {"": 1}
    assert kbit_load_kwargs(8)["quantization_config"].load_in_8bit is True


def test_the_planner_prices_quantised_linear_layers_and_fp32_for_the_rest():
    config = model_config(LLAMA_3B)
    stats = model_stats(config)
    assert stats.parameters == 3_212_749_824  # Llama-3.2-3B's published count, from the architecture constants
    lora = LoraSpec()
    full = estimate_memory(config, batch_size=1, seq_len=512, lora=lora)
    four = estimate_memory(config, batch_size=1, seq_len=512, lora=lora, quantization=4)
    eight = estimate_memory(config, batch_size=1, seq_len=512, lora=lora, quantization=8)
    linears = [(fin, fout) for name, fin, fout in stats.linears if name != stats.output_layer]
    q = sum(fin * fout for fin, fout in linears)
    rest = (stats.parameters - q + four.trainable) * 4
    assert four.weights == int(q * KBIT_WEIGHT_BYTES[4]) + rest
    assert eight.weights == int(sum(fin * fout + 4 * fout for fin, fout in linears)) + rest
    assert KBIT_WEIGHT_BYTES[4] == pytest.approx(4.127 / 8, abs=1e-4)  # NF4 + double-quantised constants
    assert four.activations == full.activations and four.gradients == full.gradients  # only the weights differ
    assert four.total < eight.total < full.total
    with pytest.raises(ConfigError, match="trains LoRA adapters"):
        estimate_memory(config, batch_size=1, seq_len=512, quantization=4)


def test_plans_fall_back_to_qlora_only_where_nothing_in_full_precision_fits():
    three_b = plan(model_config(LLAMA_3B), effective_batch=16, seq_len=512)
    assert three_b.fits and three_b.recommended.quantization == 4
    assert three_b.recommended.flags().endswith("--lora --lora-r 8 --load-in-4bit")
    small = plan(model_config("gpt2"), effective_batch=16, seq_len=512)
    assert small.recommended.quantization is None and small.recommended.lora is None
    no_qlora = plan(model_config(LLAMA_3B), effective_batch=16, seq_len=512, qlora=False)
    assert not no_qlora.fits


def test_plan_report_for_a_4bit_run():
    cfg = resolve_config({"model_name": LLAMA_3B, "lora": True, "load_in_4bit": True, "batch_size": 2,
                          "grad_accum": 8})
    lines = plan_report(cfg, "12GiB")
    assert lines[0].startswith("your settings (batch 2 x accumulation 8, gradient checkpointing off, QLoRA 4-bit r=8):")
    assert "fits in 12.00 GiB" in lines[0]
    assert "linear layers in 4-bit, the rest fp32" in lines[1]


def _theta_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([str(BIN / "theta-train"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240)


def test_cli_plan_and_the_one_line_refusal_without_cuda(tmp_path):
    """--plan needs no GPU; training a 4-bit base on this CPU-only machine stops with one line, before any data."""
    planned = _theta_train(tmp_path, "--model-name", LLAMA_3B, "--lora", "--load-in-4bit", "--plan")
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "QLoRA 4-bit r=8" in planned.stdout and "--load-in-4bit" in planned.stdout
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for CPU-only machines")
    refused = _theta_train(tmp_path, "--model-name", LLAMA_3B, "--lora", "--load-in-4bit",
                           "--data", "nowhere.json")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "theta-train: error: --load-in-4bit needs a CUDA GPU (bitsandbytes' 4-bit kernels); this machine has none: "
        "drop --load-in-4bit to train LoRA on the full-precision model"]


def test_an_adapter_trained_on_a_4bit_base_merges_into_the_unquantised_base(tmp_path):
    """The merge path of QLoRA, with the base a full-precision folder: the merged weights are base + B A."""
    from theta_ai.model.lora import wrap_with_lora
    from theta_ai.model.merge import merge_adapter
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [r[k] for r in qa_records(24) for k in ("question", "answer")]
    base = build_tiny_llama(tmp_path / "base", texts)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = wrap_with_lora(model, r=4, alpha=8, dropout=0.0, base_path=str(base))
    torch.manual_seed(1)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # a trained-looking adapter: B = 0 would merge to the base itself
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)  # as every theta-train checkpoint holds it
    write_json(adapter / "theta_run.json", {"quantization": 4, "model_name": str(base)})
    expected = peft_model.merge_and_unload().state_dict()

    notes: list[str] = []
    out = merge_adapter(adapter, tmp_path / "merged", notes)
    assert notes == [f"{adapter} was trained on a 4-bit base (QLoRA): merging into the unquantised base model, so "
                     f"the merged weights carry the full-precision base plus the adapter"]
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert getattr(merged, "is_loaded_in_4bit", False) is False
    state = merged.state_dict()
    for key in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        assert state[key].dtype == torch.float32
        assert torch.allclose(state[key], expected[key], atol=1e-6)
    assert json.loads((out / "theta_run.json").read_text())["quantization"] == 4
    assert merge_adapter(adapter, tmp_path / "again", None) == tmp_path / "again"  # notes are optional
