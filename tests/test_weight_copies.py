"""Autocast's half-precision weight copies are cast again in the backward pass, not kept (training/weight_copies.py)."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from theta_ai import resolve_config, train
from theta_ai.training import weight_copies
from theta_ai.training.weight_copies import recast_weight_copies
from theta_fixtures import tiny_train_config


@pytest.fixture
def refs(monkeypatch):
    """Every WeightRef saved in place of a weight copy, as (parameter shape, dtype)."""
    made = []

    class Counted(weight_copies.WeightRef):
        __slots__ = ()

        def __init__(self, param, dtype, view):
            super().__init__(param, dtype, view)
            made.append((tuple(param.shape), dtype))

    monkeypatch.setattr(weight_copies, "WeightRef", Counted)
    return made


def _gpt2():
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500, bos_token_id=0,
                                      eos_token_id=0, pad_token_id=0))


def _llama():
    return LlamaForCausalLM(LlamaConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, bos_token_id=0,
                                        eos_token_id=0, pad_token_id=0))


def _loss_and_grads(model, ids, recast: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with recast_weight_copies() if recast else torch.enable_grad():
            loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


# GPT-2: 4 Conv1D weights per layer (addmm saves the weight itself) + the tied head; Llama: 7 Linear weights per
# layer (the matmul saves a transposed view of the copy) + the tied head
@pytest.mark.parametrize("build, matmul_weights", [(_gpt2, 2 * 4 + 1), (_llama, 2 * 7 + 1)], ids=["gpt2", "llama"])
def test_gradients_are_bitwise_equal_and_every_matmul_weight_is_recast(build, matmul_weights, refs):
    torch.manual_seed(0)
    model = build().eval()  # no dropout: both passes compute the same thing
    ids = torch.randint(1, 500, (2, 17))
    kept_loss, kept = _loss_and_grads(model, ids, recast=False)
    assert refs == []
    recast_loss, recast = _loss_and_grads(model, ids, recast=True)
    assert recast_loss == kept_loss
    assert all(torch.equal(kept[name], recast[name]) for name in kept)
    assert len(refs) == matmul_weights and {dtype for _, dtype in refs} == {torch.bfloat16}


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="reads glibc's allocator statistics (mallinfo2)")
def test_the_copies_are_not_held_between_the_forward_and_the_backward_pass():
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info

    def handed_out() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    torch.manual_seed(0)
    layers = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024, bias=False) for _ in range(8)])  # 8 x 2 MiB in bf16
    x = torch.randn(1, 1024, requires_grad=True)  # so every layer keeps its weight for its input's gradient
    held = {}
    for recast in (False, True):
        before = handed_out()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with recast_weight_copies() if recast else torch.enable_grad():
                out = layers(x).float().sum()
        held[recast] = (handed_out() - before) / 2**20
        out.backward()
        layers.zero_grad(set_to_none=True)
        del out
    assert held[False] - held[True] > 0.95 * 16, held  # the 16 MiB of bf16 copies are not held
    assert held[True] < 1, held


def test_a_weight_changed_in_place_before_the_backward_pass_raises():
    layer = torch.nn.Linear(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16), recast_weight_copies():
        out = layer(torch.randn(2, 8, requires_grad=True)).float().sum()
    with torch.no_grad():
        layer.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="changed in place between the forward and the backward pass"):
        out.backward()


def test_frozen_weights_and_fp32_tensors_are_kept_as_they_are(refs):
    layer = torch.nn.Linear(8, 8)
    layer.weight.requires_grad_(False)  # a LoRA run's base weight: no cast in the graph
    x = torch.randn(2, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), recast_weight_copies():
        layer(x).float().sum().backward()
    with recast_weight_copies():
        (x @ torch.randn(8, 8, requires_grad=True)).sum().backward()  # fp32: nothing to recast
    assert refs == []
    assert x.grad is not None


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_a_mixed_precision_run_recasts_its_weight_copies(tmp_path, refs, precision):
    cfg = resolve_config(tiny_train_config(tmp_path, n=16, epochs=1.0, precision=precision))
    result = train(cfg)
    assert result.metrics["train_loss"] > 0
    # theta-tiny: 2 optimizer steps of one micro-batch each; every step's forward pass saved references
    assert (len(refs) >= 2) is (precision == "bf16"), len(refs)
