"""LoRA through peft: train, resume, evaluate, merge; the merged model answers like base + adapter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from theta_ai.config import resolve_config
from theta_ai.model.lora import wrap_with_lora
from theta_ai.model.load import load_model_and_tokenizer
from theta_ai.training.run import prepare_run, train
from theta_fixtures import build_tiny_gpt2, build_tiny_llama, qa_records, tiny_train_config


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def same_adapter(a: Path, b: Path) -> bool:
    wa, wb = adapter(a), adapter(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def copy_epoch_1(run_dir: Path, tmp_path: Path) -> None:
    """A models/ folder as a crash after epoch 1 of ``run_dir``'s LoRA run left it (base + epoch 1)."""
    part = tmp_path / "models"
    part.mkdir()
    for name in ("theta_base", "theta_checkpoint_epoch_1"):
        shutil.copytree(run_dir / "models" / name, part / name)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    result = train(resolve_config(tiny_train_config(tmp, lora=True, learning_rate=1e-2)))
    return tmp, result


def test_lora_checkpoints_hold_the_adapter_and_the_base(lora_run):
    tmp, result = lora_run
    models = tmp / "models"
    assert sorted(p.name for p in models.iterdir()) == [
        "theta_base", "theta_best", "theta_checkpoint_epoch_1", "theta_checkpoint_epoch_2", "theta_final"]
    for folder in (models / "theta_checkpoint_epoch_1", models / "theta_best", models / "theta_final"):
        assert (folder / "adapter_model.safetensors").is_file() and not (folder / "model.safetensors").exists()
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "../theta_base"  # relative: models/ can move
        assert sorted(config["target_modules"]) == LLAMA_PROJECTIONS and config["r"] == 8  # theta-tiny: a Llama
    assert (models / "theta_base" / "model.safetensors").is_file()
    assert not same_adapter(models / "theta_checkpoint_epoch_1", models / "theta_checkpoint_epoch_2")


def test_only_the_adapter_trains(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, lora=True, lora_r=4)))
    trainable = {n for n, p in run.loaded.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert "LoRA r=4" in run.loaded.source
    total = sum(p.numel() for p in run.loaded.model.parameters())
    train_count = sum(p.numel() for n, p in run.loaded.model.named_parameters() if n in trainable)
    assert run.banner()[0].startswith(f"theta-train: preset rtx3060, model theta-tiny + LoRA r=4 ({total / 1e6:.2f}M "
                                      f"parameters, {train_count / 1e6:.2f}M of them train), template ")


def test_lora_resume_matches_an_uninterrupted_run(lora_run, tmp_path):
    tmp, full = lora_run
    copy_epoch_1(tmp, tmp_path)
    resumed = train(resolve_config(tiny_train_config(tmp_path, lora=True, learning_rate=1e-2, resume="auto")))
    assert same_adapter(resumed.final_dir, full.final_dir)


def test_merged_model_answers_like_base_plus_adapter(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    tmp, result = lora_run
    proc = subprocess.run([sys.executable, "-m", "theta_ai.cli.train", "--merge-lora", str(result.best_dir),
                           "--output", str(tmp_path / "merged")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert (tmp_path / "merged" / "theta_run.json").is_file()

    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tmp / "models" / "theta_base")
    with_adapter = PeftModel.from_pretrained(base, str(result.best_dir)).eval()
    tok = load_model_and_tokenizer(str(tmp_path / "merged")).tokenizer
    for question in ("What does the router number 3 do?", "What does the kernel number 14 do?"):
        ids = tok(f"Question: {question}\nAnswer:", return_tensors="pt")
        kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        assert torch.equal(merged.generate(**ids, **kwargs), with_adapter.generate(**ids, **kwargs))


def test_merge_refuses_a_folder_without_adapter(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "theta_ai.cli.train", "--merge-lora", str(tmp_path),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"theta-train: error: --merge-lora {tmp_path}: no adapter_config.json there" in proc.stderr


def test_theta_eval_evaluates_an_adapter_folder(lora_run, tmp_path):
    from theta_ai.eval.runner import EvalSettings, evaluate_model

    _, result = lora_run
    evaluated = evaluate_model(result.best_dir, settings=EvalSettings(batch_size=8, max_new_tokens=16))
    assert len(evaluated.predictions) == 8  # the validation examples stored with the checkpoint
    assert 0.0 <= evaluated.metrics["rougeL"] <= 1.0


def test_load_checkpoint_continues_the_same_adapter(lora_run, tmp_path):
    tmp, result = lora_run
    source = tmp / "models" / "theta_checkpoint_epoch_1"
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, lora=True, load_checkpoint=str(source))))
    state = {k.replace(".default", ""): v for k, v in run.loaded.model.state_dict().items() if "lora_" in k}
    saved = adapter(source)
    assert len(saved) == len(state)
    for key, tensor in saved.items():
        assert torch.equal(state[key], tensor), key


GPT2_PROJECTIONS = ["c_attn", "c_fc", "c_proj"]
LLAMA_PROJECTIONS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def wrapped_modules(peft_model) -> set[str]:
    from peft.tuners.lora import LoraLayer

    return {name for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)}


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_default_targets_are_peft_all_linear_and_the_projections(tmp_path, arch):
    """The default (peft's all-linear) wraps the attention and MLP projections the old per-architecture lists
    named, not the LM head, and the adapter config records their short names (peft itself lists every layer's
    module for fewer than 20 targets)."""
    from peft import LoraConfig, get_peft_model

    texts = [r["question"] for r in qa_records(20)] * 3
    build = build_tiny_gpt2 if arch == "gpt2" else build_tiny_llama
    source = str(build(tmp_path / arch, texts))
    projections = GPT2_PROJECTIONS if arch == "gpt2" else LLAMA_PROJECTIONS

    def fresh():
        return load_model_and_tokenizer(source).model

    wrapped = wrap_with_lora(fresh())
    explicit = get_peft_model(fresh(), LoraConfig(target_modules=projections, fan_in_fan_out=arch == "gpt2"))
    assert wrapped_modules(wrapped) == wrapped_modules(explicit) and len(wrapped_modules(wrapped)) < 20
    assert not any(name.endswith("lm_head") for name in wrapped_modules(wrapped))
    assert wrapped.peft_config["default"].fan_in_fan_out == (arch == "gpt2")  # GPT-2's Conv1D
    wrapped.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(saved["target_modules"]) == projections


# ---------------------------------------------------------------------------- issue 13: resume, portable base, dry run

SAVED_LORA = "r=8, alpha=16, dropout=0.05, target modules down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj"


@pytest.mark.parametrize("flags, ignored", [
    ({"lora_alpha": 32}, "--lora-alpha 32"),
    ({"lora_dropout": 0.2}, "--lora-dropout 0.2"),
    ({"lora_r": 4}, "--lora-r 4"),
    ({"lora_target_modules": "q_proj"}, "--lora-target-modules q_proj"),
    ({"lora_dora": True, "lora_rslora": True}, "--lora-dora, --lora-rslora"),
])
def test_lora_resume_keeps_the_saved_adapter_configuration(lora_run, tmp_path, flags, ignored):
    tmp, full = lora_run
    copy_epoch_1(tmp, tmp_path)
    cfg = resolve_config(tiny_train_config(tmp_path, lora=True, learning_rate=1e-2, resume="auto", **flags))
    run = prepare_run(cfg)
    assert (f"--resume: the checkpoint's LoRA adapter was trained with {SAVED_LORA}; it resumes with those "
            f"(ignored: {ignored})") in run.notes
    assert run.loaded.source.endswith("LoRA r=8")
    resumed = train(cfg, prepared=run)
    saved = json.loads((resumed.final_dir / "adapter_config.json").read_text())
    expected = json.loads((full.final_dir / "adapter_config.json").read_text())
    for key in ("r", "lora_alpha", "lora_dropout", "base_model_name_or_path"):
        assert saved[key] == expected[key], key
    assert sorted(saved["target_modules"]) == sorted(expected["target_modules"])
    assert same_adapter(resumed.final_dir, full.final_dir)


def test_lora_resume_with_the_same_flags_adds_no_note(lora_run, tmp_path):
    tmp, _ = lora_run
    copy_epoch_1(tmp, tmp_path)
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, lora=True, resume="auto",
                                                       lora_target_modules="v_proj, q_proj,k_proj,o_proj,"
                                                                           "gate_proj,up_proj,down_proj")))
    assert not [n for n in run.notes if "LoRA adapter" in n]


def test_load_checkpoint_adapter_notes_the_ignored_flags(lora_run, tmp_path):
    tmp, _ = lora_run
    source = tmp / "models" / "theta_checkpoint_epoch_1"
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, lora=True, load_checkpoint=str(source),
                                                       lora_alpha=64, lora_dropout=0.0)))
    assert (f"--load-checkpoint: the LoRA adapter in {source} was trained with {SAVED_LORA}; training continues "
            f"with those (ignored: --lora-alpha 64, --lora-dropout 0)") in run.notes
    config = run.loaded.model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)


def test_load_checkpoint_adapter_in_the_same_folder_keeps_a_loadable_base(lora_run, tmp_path):
    """The continued adapter's checkpoints lie one folder deeper (finetune_from_...): their base reference follows."""
    tmp, _ = lora_run
    for name in ("theta_base", "theta_final"):
        shutil.copytree(tmp / "models" / name, tmp_path / "models" / name)
    values = tiny_train_config(tmp_path, lora=True, epochs=1.0,
                               load_checkpoint=str(tmp_path / "models" / "theta_final"))
    del values["checkpoint_dir"]  # chosen by the run: models/finetune_from_theta_final/
    final = tmp_path / _train_in(tmp_path, values).final_dir  # relative to tmp_path, like models/
    assert final.parent == tmp_path / "models" / "finetune_from_theta_final"
    config = json.loads((final / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "../../theta_base"
    loaded = load_model_and_tokenizer(str(final))
    assert type(loaded.model).__name__ == "LlamaForCausalLM"


def _train_in(tmp_path: Path, values: dict):
    """Train with ``values`` from inside ``tmp_path`` (the default --checkpoint-dir is models/, relative)."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        return train(resolve_config(values))
    finally:
        os.chdir(cwd)


def test_lora_checkpoints_survive_moving_the_models_folder(tmp_path):
    result = train(resolve_config(tiny_train_config(tmp_path / "a", lora=True, epochs=1.0)))
    moved = tmp_path / "elsewhere" / "moved_models"
    moved.parent.mkdir()
    shutil.move(str(result.checkpoint_dir), str(moved))
    config = json.loads((moved / "theta_best" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "../theta_base"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([str(Path(sys.executable).parent / "theta-eval"), "--model-path", str(moved / "theta_best"),
                           "--max-new-tokens", "8", "--output", str(tmp_path / "eval")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "eval_results.json").read_text())["num_examples"] == 8

    from theta_ai.model.merge import merge_adapter

    merged = merge_adapter(moved / "theta_best", tmp_path / "merged")
    assert (merged / "model.safetensors").is_file()


def _old_checkpoint(lora_run, tmp_path: Path, base: str) -> Path:
    """A copy of the run's models/ whose theta_best names its base as earlier versions did: an absolute path."""
    tmp, _ = lora_run
    models = tmp_path / "models"
    for name in ("theta_base", "theta_best"):
        shutil.copytree(tmp / "models" / name, models / name)
    config_file = models / "theta_best" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base
    config_file.write_text(json.dumps(config))
    return models / "theta_best"


def test_old_absolute_base_path_still_loads(lora_run, tmp_path):
    from theta_ai.model.lora import adapter_base

    folder = _old_checkpoint(lora_run, tmp_path, str((tmp_path / "models" / "theta_base").resolve()))
    assert adapter_base(folder) == str((tmp_path / "models" / "theta_base").resolve())
    assert type(load_model_and_tokenizer(str(folder)).model).__name__ == "LlamaForCausalLM"


def test_old_absolute_base_path_falls_back_to_the_sibling_theta_base(lora_run, tmp_path, caplog):
    from theta_ai.model.lora import adapter_base
    from theta_ai.model.merge import merge_adapter

    gone = tmp_path / "old_disk" / "models" / "theta_base"
    folder = _old_checkpoint(lora_run, tmp_path, str(gone))
    with caplog.at_level("INFO", logger="theta_ai"):
        assert adapter_base(folder) == str((tmp_path / "models" / "theta_base").resolve())
    assert [r.getMessage() for r in caplog.records if "theta_base" in r.getMessage()] == [
        f"{folder}: its base model {gone} does not exist; using {tmp_path / 'models' / 'theta_base'} "
        f"next to it instead"]
    assert (merge_adapter(folder, tmp_path / "merged") / "model.safetensors").is_file()


def test_missing_adapter_base_is_one_clear_error(lora_run, tmp_path):
    from theta_ai.model.load import ModelLoadError

    gone = tmp_path / "old_disk" / "models" / "theta_base"
    folder = _old_checkpoint(lora_run, tmp_path, str(gone))
    shutil.rmtree(tmp_path / "models" / "theta_base")
    with pytest.raises(ModelLoadError) as error:
        load_model_and_tokenizer(str(folder))
    assert str(error.value) == (
        f"{folder} is a LoRA adapter whose base model {gone} does not exist (nor a theta_base folder next to "
        f"{folder}); copy the base model to {tmp_path / 'models' / 'theta_base'}, or set base_model_name_or_path "
        f"in {folder / 'adapter_config.json'} to the base model's folder or hub id")
    proc = subprocess.run([sys.executable, "-m", "theta_ai.cli.train", "--merge-lora", str(folder),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip() == f"theta-train: error: {error.value}"


def test_user_base_folder_and_hub_id_stay_as_given(tmp_path):
    from theta_ai.model.lora import base_reference

    own = build_tiny_llama(tmp_path / "llama", [r["question"] for r in qa_records(20)] * 3)
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, lora=True, model_name=str(own))))
    assert run.loaded.model.peft_config["default"].base_model_name_or_path == str(own.resolve())
    assert base_reference("Qwen/Qwen2.5-0.5B", tmp_path / "models") == "Qwen/Qwen2.5-0.5B"
    assert base_reference(str(tmp_path / "models" / "theta_base"), tmp_path / "models") == "../theta_base"


def test_lora_dry_run_writes_nothing(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, lora=True, dry_run=True)))
    assert "LoRA r=8" in run.loaded.source
    models = tmp_path / "models"
    assert not models.exists() or not any(models.iterdir())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_dora_and_rslora_train_save_and_merge(tmp_path, arch):
    """--lora-dora and --lora-rslora reach peft (use_dora, use_rslora): the adapter trains its magnitude vectors,
    saves both settings, and merges into a plain model whose logits are the adapter model's."""
    from transformers import AutoModelForCausalLM

    from theta_ai.model.merge import merge_adapter

    texts = [r["question"] for r in qa_records(20)] * 3
    values = tiny_train_config(tmp_path, lora=True, lora_dora=True, lora_rslora=True, epochs=1.0, learning_rate=1e-2)
    if arch == "gpt2":  # theta-tiny itself is a Llama
        values["model_name"] = str(build_tiny_gpt2(tmp_path / "gpt2", texts))
    run = prepare_run(resolve_config(values))
    config = run.loaded.model.peft_config["default"]
    assert (config.use_dora, config.use_rslora) == (True, True)
    trainable = {n for n, p in run.loaded.model.named_parameters() if p.requires_grad}
    assert any("lora_magnitude_vector" in n for n in trainable) and all("lora_" in n for n in trainable)
    result = train(run.cfg, prepared=run)
    saved = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert (saved["use_dora"], saved["use_rslora"]) == (True, True)
    merged = merge_adapter(str(result.final_dir), str(tmp_path / "merged"))
    adapter = load_model_and_tokenizer(str(result.final_dir), adapter="trainable").model.eval()
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    ids = torch.tensor([[3, 5, 7, 11, 13, 17]])
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, adapter(ids).logits, rtol=1e-4, atol=1e-5)
