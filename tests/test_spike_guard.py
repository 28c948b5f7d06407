"""The spike guard's weight restore: single files and shards, strict keys, tied weights (issue 13, defect 9).

End-to-end rollbacks with real Trainer runs are in test_enhanced.py; these build a tiny GPT-2 directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, TrainerControl, TrainerState

from theta_ai.training.callbacks import SpikeGuardCallback


def tiny_gpt2(seed: int, tie: bool = True) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=64, n_layer=2, n_head=2, n_embd=16, n_positions=32, bos_token_id=0,
                        eos_token_id=0, tie_word_embeddings=tie)
    return GPT2LMHeadModel(config)


def tensors(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(model, expected: dict[str, torch.Tensor]) -> None:
    actual = model.state_dict()
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def shards_of(folder: Path) -> list[str]:
    return sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()))


def sharded(folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Save a tiny GPT-2 in several shards; returns its tensors."""
    model = tiny_gpt2(seed)
    model.save_pretrained(folder, max_shard_size="8KB")
    assert not (folder / "model.safetensors").exists() and len(shards_of(folder)) >= 3
    return tensors(model)


def single(folder: Path, seed: int = 0, tie: bool = True) -> dict[str, torch.Tensor]:
    model = tiny_gpt2(seed, tie)
    model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    return tensors(model)


def edit_single(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    weights = load_file(str(path))
    edit(weights)
    save_file(weights, str(path), metadata={"format": "pt"})


# ---------------------------------------------------------------------------- load_saved_weights


@pytest.mark.parametrize("layout", ["sharded", "single"])
def test_load_saved_weights_gives_exactly_the_saved_tensors(tmp_path, layout):
    from theta_ai.model.weights import load_saved_weights

    saved = (sharded if layout == "sharded" else single)(tmp_path / "saved")
    model = tiny_gpt2(seed=1)
    assert not torch.equal(model.transformer.h[1].mlp.c_proj.weight, saved["transformer.h.1.mlp.c_proj.weight"])
    load_saved_weights(model, tmp_path / "saved")
    assert_same(model, saved)
    # the tied lm_head (stored once, as the embedding) is still tied and so restored too
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert all("lm_head.weight" not in load_file(str(f)) for f in (tmp_path / "saved").glob("*.safetensors"))


MISMATCHES = {
    "renamed": (lambda w: w.update({"transformer.h.0.mlp.c_fc.weight_old": w.pop("transformer.h.0.mlp.c_fc.weight")}),
                "unexpected key(s) 'transformer.h.0.mlp.c_fc.weight_old'; "
                "missing key(s) 'transformer.h.0.mlp.c_fc.weight'"),
    "extra": (lambda w: w.update({"extra.weight": torch.zeros(3)}), "unexpected key(s) 'extra.weight'"),
    "missing": (lambda w: w.pop("transformer.ln_f.bias"), "missing key(s) 'transformer.ln_f.bias'"),
    "shape": (lambda w: w.update({"transformer.ln_f.weight": torch.ones(8)}),
              "'transformer.ln_f.weight' has shape (8,) in the files but (16,) in the model"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_mismatched_weights_raise_and_leave_the_model_alone(tmp_path, case):
    from theta_ai.model.weights import WeightLoadError, load_saved_weights

    edit, problem = MISMATCHES[case]
    single(tmp_path / "saved")
    edit_single(tmp_path / "saved", edit)
    model = tiny_gpt2(seed=1)
    before = tensors(model)
    with pytest.raises(WeightLoadError) as info:
        load_saved_weights(model, tmp_path / "saved")
    assert str(info.value) == f"cannot load the weights in {tmp_path / 'saved'} into GPT2LMHeadModel: {problem}"
    assert_same(model, before)  # checked before anything is loaded: no half-restored model


def test_long_key_lists_are_shortened(tmp_path):
    from theta_ai.model.weights import WeightLoadError, load_saved_weights

    single(tmp_path / "saved")
    edit_single(tmp_path / "saved", lambda w: w.update({f"extra.{i}": torch.zeros(1) for i in range(7)}))
    with pytest.raises(WeightLoadError, match=r": unexpected key\(s\) 'extra\.0', 'extra\.1', 'extra\.2', "
                                              r"'extra\.3', 'extra\.4', \.\.\. \(7 in all\)$"):
        load_saved_weights(tiny_gpt2(seed=1), tmp_path / "saved")


def test_a_shard_missing_a_key_raises(tmp_path):
    from theta_ai.model.weights import WeightLoadError, load_saved_weights

    folder = tmp_path / "saved"
    sharded(folder)
    shard = folder / shards_of(folder)[-1]
    weights = load_file(str(shard))
    dropped = sorted(weights)[0]
    del weights[dropped]
    save_file(weights, str(shard), metadata={"format": "pt"})  # the index still names it: the files decide
    with pytest.raises(WeightLoadError) as info:
        load_saved_weights(tiny_gpt2(seed=1), folder)
    assert str(info.value) == f"cannot load the weights in {folder} into GPT2LMHeadModel: missing key(s) '{dropped}'"


def test_a_missing_shard_raises(tmp_path):
    from theta_ai.model.weights import WeightLoadError, load_saved_weights

    folder = tmp_path / "saved"
    sharded(folder)
    gone = shards_of(folder)[1]
    (folder / gone).unlink()
    with pytest.raises(WeightLoadError) as info:
        load_saved_weights(tiny_gpt2(seed=1), folder)
    assert str(info.value) == (f"cannot load the weights in {folder}: {gone}, named in model.safetensors.index.json, "
                               "is missing")


def test_a_folder_without_weights_raises(tmp_path):
    from theta_ai.model.weights import WeightLoadError, load_saved_weights

    tmp_path.joinpath("config.json").write_text("{}")
    with pytest.raises(WeightLoadError) as info:
        load_saved_weights(tiny_gpt2(seed=1), tmp_path)
    assert str(info.value) == (f"cannot load the weights in {tmp_path}: it has no model.safetensors and no "
                               "model.safetensors.index.json")


def test_only_a_real_tie_may_be_left_out(tmp_path):
    """The tie is read off the live model, not off the key's name: an untied lm_head must be in the files."""
    from theta_ai.model.weights import WeightLoadError, load_saved_weights

    saved = single(tmp_path / "untied", tie=False)
    assert "lm_head.weight" in load_file(str(tmp_path / "untied" / "model.safetensors"))
    model = tiny_gpt2(seed=1, tie=False)
    load_saved_weights(model, tmp_path / "untied")
    assert_same(model, saved)
    edit_single(tmp_path / "untied", lambda w: w.pop("lm_head.weight"))
    with pytest.raises(WeightLoadError, match=r"into GPT2LMHeadModel: missing key\(s\) 'lm_head\.weight'$"):
        load_saved_weights(tiny_gpt2(seed=1, tie=False), tmp_path / "untied")


def test_has_saved_weights(tmp_path):
    from theta_ai.model.weights import has_saved_weights

    single(tmp_path / "single")
    sharded(tmp_path / "sharded")
    (tmp_path / "adapter").mkdir()
    save_file({"x": torch.zeros(1)}, str(tmp_path / "adapter" / "adapter_model.safetensors"))
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text("{}")
    assert [has_saved_weights(tmp_path / n) for n in ("single", "sharded", "adapter", "config_only", "nowhere")] == [
        True, True, True, False, False]


# ---------------------------------------------------------------------------- SpikeGuardCallback


def _spike(guard, model):
    guard._spike("test spike", TrainerState(global_step=7), TrainerControl(), model=model, optimizer=None,
                 lr_scheduler=None)


def test_spike_guard_rolls_back_to_a_sharded_best(tmp_path):
    saved = sharded(tmp_path / "theta_best")
    guard = SpikeGuardCallback(tmp_path)
    model = tiny_gpt2(seed=1)
    _spike(guard, model)
    assert guard.rollbacks == [{"step": 7, "reason": "test spike"}]
    assert_same(model, saved)


def test_spike_guard_refuses_a_best_that_does_not_match(tmp_path):
    single(tmp_path / "theta_best")
    edit_single(tmp_path / "theta_best", lambda w: w.pop("transformer.h.1.attn.c_attn.weight"))
    model = tiny_gpt2(seed=1)
    before = tensors(model)
    with pytest.raises(RuntimeError) as info:
        _spike(SpikeGuardCallback(tmp_path), model)
    assert str(info.value) == (f"cannot load the weights in {tmp_path / 'theta_best'} into GPT2LMHeadModel: "
                               "missing key(s) 'transformer.h.1.attn.c_attn.weight'")
    assert_same(model, before)
