"""The GPU memory planner: exact parameter counts, LoRA counts against peft, monotonicity, plans, parsing,
and the activation estimate against the bytes autograd really saves (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from theta_ai.config import ConfigError, resolve_config
from theta_ai.planner import (DEFAULT_GPU_MEMORY, GiB, LoraSpec, estimate_memory, parameter_bytes, parse_memory,
                              plan, plan_report, plan_table_markdown)
from theta_ai.planner.activations import LOGITS_PEAK_BYTES
from theta_ai.planner.measure import saved_tensor_bytes
from theta_ai.planner.models import model_config, model_stats

GPT2_SIZES = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080}
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
# The activation estimate describes CUDA; on CPU it must agree with the saved tensors within this fraction.
# Measured (fp32, dropout 0): GPT-2 0.95-1.00 (CPU's SDPA copies q and v, CUDA's does not), Llama 1.00-1.03.
ACTIVATION_TOLERANCE = 0.15


def tiny_gpt2(**overrides) -> GPT2Config:
    return GPT2Config(**{**dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=256), **overrides})


def tiny_llama(**overrides) -> LlamaConfig:
    return LlamaConfig(**{**dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=1000, max_position_embeddings=256), **overrides})


def real_model(config, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


# ---------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", list(GPT2_SIZES))
def test_gpt2_parameter_counts_are_exact(name):
    config = model_config(name)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in meta.parameters()) == GPT2_SIZES[name]  # tied lm_head counted once
    assert parameter_bytes(config, "fp32") == 4 * GPT2_SIZES[name]
    assert parameter_bytes(config, torch.float16) == parameter_bytes(config, "bf16") == 2 * GPT2_SIZES[name]
    for precision in ("fp32", "fp16", "bf16"):  # Trainer's mixed precision keeps fp32 master weights
        assert estimate_memory(config, batch_size=1, seq_len=8, precision=precision).weights == 4 * GPT2_SIZES[name]


def test_parameter_count_matches_a_real_model():
    config = tiny_llama(tie_word_embeddings=False)
    model = real_model(config)
    assert model_stats(config).parameters == sum(p.numel() for p in model.parameters())
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert model_stats(config).matmul_weights == matmul


def test_gpt2_medium_and_large_configs_are_the_published_architectures():
    assert (model_config("gpt2-medium").n_embd, model_config("gpt2-medium").n_layer) == (1024, 24)
    assert (model_config("gpt2-large").n_embd, model_config("gpt2-large").n_head) == (1280, 20)
    assert model_config("openai-community/gpt2").n_layer == 12


# ---------------------------------------------------------------------------- LoRA


def peft_trainable(model, **lora_kwargs) -> int:
    import peft

    wrapped = peft.get_peft_model(model, peft.LoraConfig(**lora_kwargs))
    return sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")
def test_lora_trainable_count_matches_peft_for_gpt2():
    config = tiny_gpt2()
    targets = ("c_attn", "c_proj", "c_fc")
    est = estimate_memory(config, batch_size=1, seq_len=8, lora=LoraSpec(r=8, target_modules=targets))
    h, i = 64, 256
    per_layer = 8 * ((h + 3 * h) + (h + h) + (h + i) + (i + h))  # r (in + out) for c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert est.trainable == 2 * per_layer == 16_384
    assert est.trainable == peft_trainable(real_model(config), r=8, target_modules=list(targets))
    assert est.gradients == 4 * est.trainable and est.optimizer == 8 * est.trainable
    assert est.weights == 4 * (model_stats(config).parameters + est.trainable)


@pytest.mark.parametrize("targets", ["all-linear", ("q_proj", "v_proj")])
def test_lora_trainable_count_matches_peft_for_llama(targets):
    config = tiny_llama()
    est = estimate_memory(config, batch_size=1, seq_len=8, lora=LoraSpec(r=4, target_modules=targets))
    peft_targets = targets if isinstance(targets, str) else list(targets)
    assert est.trainable == peft_trainable(real_model(config), r=4, target_modules=peft_targets)


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")
@pytest.mark.parametrize("config", [tiny_gpt2(), tiny_llama()], ids=["gpt2", "llama"])
def test_all_linear_prices_the_modules_peft_wraps(config):
    """theta-train's default targets (peft's all-linear) priced on the meta model: the modules peft wraps."""
    import peft
    from peft.tuners.lora import LoraLayer

    wrapped = peft.get_peft_model(real_model(config), peft.LoraConfig(r=8, target_modules="all-linear"))
    names = {n.removeprefix("base_model.model.") for n, m in wrapped.named_modules() if isinstance(m, LoraLayer)}
    assert {n for n, _, _ in model_stats(config).targeted("all-linear")} == names
    est = estimate_memory(config, batch_size=1, seq_len=8, lora=LoraSpec(r=8, target_modules="all-linear"))
    assert est.trainable == sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    if config.model_type == "gpt2":
        assert est.trainable == 16_384  # c_attn, c_proj, c_fc: the count the GPT-2 test above derives


def test_lora_dropout_and_targets_outside_the_layers():
    config = tiny_gpt2()
    base = estimate_memory(config, batch_size=2, seq_len=64, lora=LoraSpec(target_modules=("c_attn",)))
    dropout = estimate_memory(config, batch_size=2, seq_len=64, lora=LoraSpec(target_modules=("c_attn",), dropout=0.1))
    # with dropout lora_A keeps its own dropped-out copy of the input instead of the shared one, plus a 1-byte
    # mask: 1 x 64 more bytes per token per layer
    assert dropout.activations - base.activations == (2 * 64) * 2 * 1 * 64
    head = estimate_memory(config, batch_size=2, seq_len=64, lora=LoraSpec(target_modules=("c_attn", "lm_head")))
    # an adapted LM head keeps its input (2 bytes x 64) and lora_A's output (2 bytes x r), once, not per layer
    assert head.activations - base.activations == 2 * 64 * (2 * 64 + 2 * 8)


def test_lora_targets_that_match_nothing_are_refused():
    with pytest.raises(ConfigError, match="match no linear layer"):
        estimate_memory(tiny_gpt2(), batch_size=1, seq_len=8, lora=LoraSpec(target_modules=("q_proj",)))


# ---------------------------------------------------------------------------- the estimate


def test_terms_add_up_and_logits_term_is_fp32_batch_seq_vocab():
    est = estimate_memory(GPT2Config(), batch_size=4, seq_len=512, precision="fp16")
    assert est.total == (est.weights + est.weight_copies + est.gradients + est.optimizer + est.activations
                         + est.logits + est.overhead)
    assert est.logits == LOGITS_PEAK_BYTES * 4 * 512 * 50_257 == 12 * 4 * 512 * 50_257
    assert est.weight_copies == 2 * model_stats(GPT2Config()).matmul_weights
    assert estimate_memory(GPT2Config(), batch_size=4, seq_len=512, precision="fp32").weight_copies == 0
    assert len(est.as_table()) == 8 and "total" in est.as_table()[-1]


def test_more_batch_or_sequence_needs_more_memory():
    config = GPT2Config()
    small = estimate_memory(config, batch_size=2, seq_len=256)
    for bigger in (estimate_memory(config, batch_size=4, seq_len=256), estimate_memory(config, batch_size=2, seq_len=512)):
        assert bigger.activations > small.activations and bigger.logits > small.logits
        assert bigger.total > small.total
        assert (bigger.weights, bigger.optimizer) == (small.weights, small.optimizer)


def test_checkpointing_and_lora_save_what_they_should():
    config = model_config("gpt2-medium")
    full = estimate_memory(config, batch_size=4, seq_len=512)
    ckpt = estimate_memory(config, batch_size=4, seq_len=512, gradient_checkpointing=True)
    lora = estimate_memory(config, batch_size=4, seq_len=512, lora=LoraSpec())
    assert ckpt.activations < full.activations / 4
    assert ckpt.optimizer == full.optimizer and ckpt.logits == full.logits
    assert lora.optimizer < full.optimizer / 100 and lora.gradients < full.gradients / 100
    assert lora.activations <= full.activations  # activations still flow through every layer
    assert lora.activations > ckpt.activations
    fp32 = estimate_memory(config, batch_size=4, seq_len=512, precision="fp32")
    assert fp32.activations > full.activations


def test_bad_precision_and_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="precision"):
        estimate_memory(GPT2Config(), batch_size=1, seq_len=8, precision="int8")
    with pytest.raises(ConfigError, match="positive"):
        estimate_memory(GPT2Config(), batch_size=0, seq_len=8)


# ---------------------------------------------------------------------------- activations against reality (CPU)


@pytest.mark.parametrize("family,gradient_checkpointing,lora", [
    ("gpt2", False, None), ("gpt2", True, None), ("gpt2", False, LoraSpec(r=8, target_modules=("c_attn",))),
    ("llama", False, None), ("llama", True, None), ("llama", False, LoraSpec(r=8, target_modules="all-linear")),
])
@pytest.mark.filterwarnings("ignore:fan_in_fan_out")
def test_activation_estimate_matches_saved_tensors_on_cpu(family, gradient_checkpointing, lora):
    config = (tiny_gpt2(n_embd=128, **NO_DROPOUT) if family == "gpt2"
              else tiny_llama(hidden_size=128, intermediate_size=344))
    model = real_model(config)
    if gradient_checkpointing:
        model.activation_checkpointing_enable()
    if lora is not None:
        import peft

        targets = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
        model = peft.get_peft_model(model, peft.LoraConfig(r=lora.r, target_modules=targets))
    batch, seq = 3, 96
    measured = saved_tensor_bytes(model, batch, seq)
    est = estimate_memory(config, batch_size=batch, seq_len=seq, precision="fp32", padded=False,
                          gradient_checkpointing=gradient_checkpointing, lora=lora)
    ratio = est.saved_for_backward / measured.activations
    assert abs(ratio - 1) <= ACTIVATION_TOLERANCE, f"estimate / measured = {ratio:.3f}"
    assert measured.weight_copies == 0


def test_autocast_weight_copies_match_on_cpu():
    config = tiny_llama()
    measured = saved_tensor_bytes(real_model(config), 2, 32, autocast_dtype=torch.bfloat16)
    assert measured.weight_copies == estimate_memory(config, batch_size=2, seq_len=32, precision="bf16").weight_copies


def test_cuda_autocast_runs_pow_in_fp32():
    """The GPT-2 estimate assumes CUDA autocast casts gelu_new's pow to fp32 (CPU autocast does not)."""
    dump = getattr(torch._C, "_dispatch_dump", None)
    if dump is None:
        pytest.skip("this torch cannot list dispatch registrations")
    assert "AutocastCUDA" in dump("aten::pow.Tensor_Scalar")
    assert "AutocastCUDA" not in dump("aten::tanh")  # tanh follows its (fp32) input


# ---------------------------------------------------------------------------- plans


def test_gpt2_at_256_tokens_fits_12gb_without_checkpointing_or_lora():
    p = plan(GPT2Config(), effective_batch=16, seq_len=256, gpu_memory_bytes=12 * GiB)
    rec = p.recommended
    assert p.fits and not rec.gradient_checkpointing and rec.lora is None
    assert rec.batch_size * rec.grad_accum == 16
    assert rec.estimate.total <= 12 * GiB
    assert p.estimate is rec.estimate


def test_gpt2_large_at_512_tokens_needs_a_memory_saver():
    p = plan(model_config("gpt2-large"), effective_batch=16, seq_len=512, gpu_memory_bytes=12 * GiB)
    rec = p.recommended
    assert p.fits and (rec.gradient_checkpointing or rec.lora is not None)
    # full fine-tuning of 774M parameters needs 16 bytes each before any activation: over 12 GiB
    assert not any(c.fits for c in p.candidates if c.lora is None)


def test_plan_prefers_full_then_no_checkpointing_then_bigger_batch():
    p = plan(GPT2Config(), effective_batch=12, seq_len=512, gpu_memory_bytes=12 * GiB)
    assert [c.batch_size for c in p.candidates[:6]] == [12, 6, 4, 3, 2, 1]
    keys = [(c.lora is not None, c.quantization is not None, c.gradient_checkpointing) for c in p.candidates]
    assert keys == sorted(keys)  # full, LoRA, QLoRA; each without checkpointing first
    assert p.recommended is next(c for c in p.candidates if c.fits)
    assert all(c.batch_size * c.grad_accum == 12 for c in p.candidates)
    no_lora = plan(model_config("gpt2-large"), effective_batch=16, seq_len=512, lora=None)
    assert not no_lora.fits and all(c.lora is None for c in no_lora.candidates)


def test_when_nothing_fits_the_plan_says_so():
    p = plan(GPT2Config(), effective_batch=8, seq_len=512, gpu_memory_bytes=parse_memory("1GiB"))
    assert not p.fits
    assert p.recommended.estimate.total == min(c.estimate.total for c in p.candidates)
    assert "nothing fits" in "\n".join(p.lines())


def test_plan_table_markdown():
    table = plan_table_markdown()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| model |") and len(lines) == 2 + 12
    assert "`gpt2-large`" in lines[7] and "GiB" in lines[7]
    assert lines[-1].startswith("| `meta-llama/Llama-3.2-3B-Instruct` | 3,213M | 512 |")
    assert "QLoRA 4-bit base, r=8 on all-linear" in lines[-1] and "does not fit" not in table


def test_plan_report_for_the_default_preset_needs_no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = resolve_config({})  # rtx3060: gpt2, batch 4 x 4, 512 tokens, precision auto -> fp16 on CUDA
    text = "\n".join(plan_report(cfg, "12GiB"))
    assert "batch 4 x accumulation 4" in text and "fits in 12.00 GiB" in text
    assert "fastest settings that fit" in text and "--batch-size" in text


def test_model_config_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_llama().save_pretrained(tmp_path)
    assert model_config(str(tmp_path)).model_type == "llama"
    tiny = model_config("theta-tiny")  # the shipped config, as built by theta_ai.model.load
    assert (tiny.model_type, tiny.hidden_size, tiny.num_hidden_layers, tiny.vocab_size) == ("llama", 128, 2, 2048)
    with pytest.raises(ConfigError, match="never downloaded"):
        model_config("someone/not-a-cached-model-xyz")
    with pytest.raises(ConfigError, match="does not exist"):
        model_config(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        model_config(str(tmp_path / "empty"))


# ---------------------------------------------------------------------------- parse_memory


@pytest.mark.parametrize("text,expected", [
    ("12GB", 12 * 10**9), ("12GiB", 12 * 2**30), ("12Gi", 12 * 2**30), ("11.5G", 11_500_000_000),
    ("12000MB", 12 * 10**9), ("12 gb", 12 * 10**9), ("512MiB", 512 * 2**20), ("1024", 1024), (".5TB", 5 * 10**11),
    (12 * 2**30, 12 * 2**30),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "twelve", "12XB", "-1GB", "0GB", "12 G B", "GiB", "12iB", "1e9"])
def test_parse_memory_rejects_bad_input(text):
    with pytest.raises(ValueError, match="positive" if text == "0GB" else "12GB, 12GiB"):
        parse_memory(text)


def test_default_target_is_the_rtx3060():
    assert DEFAULT_GPU_MEMORY == parse_memory("12GiB")
