"""LoRA through peft: train, resume, evaluate, merge; the merged model answers like base + adapter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from theta_ai.config import resolve_config
from theta_ai.lora import DEFAULT_TARGETS, default_target_modules
from theta_ai.modeling import load_model_and_tokenizer
from theta_ai.training import prepare_run, train
from theta_fixtures import build_tiny_llama, qa_records, tiny_train_config


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def same_adapter(a: Path, b: Path) -> bool:
    wa, wb = adapter(a), adapter(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


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
        assert config["base_model_name_or_path"] == str((models / "theta_base").resolve())
        assert sorted(config["target_modules"]) == sorted(DEFAULT_TARGETS["gpt2"]) and config["r"] == 8
    assert (models / "theta_base" / "model.safetensors").is_file()
    assert not same_adapter(models / "theta_checkpoint_epoch_1", models / "theta_checkpoint_epoch_2")


def test_only_the_adapter_trains(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, lora=True, lora_r=4)))
    trainable = {n for n, p in run.loaded.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert "LoRA r=4" in run.loaded.source


def test_lora_resume_matches_an_uninterrupted_run(lora_run, tmp_path):
    tmp, full = lora_run
    part = tmp_path / "models"
    part.mkdir()
    shutil.copytree(tmp / "models" / "theta_checkpoint_epoch_1", part / "theta_checkpoint_epoch_1")
    resumed = train(resolve_config(tiny_train_config(tmp_path, lora=True, learning_rate=1e-2, resume="auto")))
    assert same_adapter(resumed.final_dir, full.final_dir)


def test_merged_model_answers_like_base_plus_adapter(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    tmp, result = lora_run
    proc = subprocess.run([sys.executable, "-m", "theta_ai.cli.train", "--merge-lora", str(result.best_dir),
                           "--output", str(tmp_path / "merged")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert type(merged).__name__ == "GPT2LMHeadModel"
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
    from theta_ai.evaluation import EvalSettings, evaluate_model

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


def test_llama_default_targets(tmp_path):
    model_dir = build_tiny_llama(tmp_path / "llama", [r["question"] for r in qa_records(20)] * 3)
    loaded = load_model_and_tokenizer(str(model_dir))
    assert default_target_modules(loaded.model) == list(DEFAULT_TARGETS["llama"])
