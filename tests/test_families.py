"""theta_ai over the real tokenizers of four model families (GPT-2, Llama 3, Qwen3, Gemma 3), each with a tiny
randomly initialised model of its family (tests/families.py): a library training step, gradient accumulation,
LoRA targets and merging with tied embeddings, and theta-train + theta-eval as subprocesses.

These tests do not pin the exact trained token strings (tests/test_data_tokenize.py owns the templates); they
check what must hold for any correct formatting: finite losses, masked prompts, exact loss normalisation.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from families import FAMILIES, LAYERS, LORA_TARGETS, TIED, family_model_dir, tiny_family_model
from theta_fixtures import write_json

BIN = Path(sys.executable).parent
ANSWER_LENGTHS = (1, 4, 18, 45)  # words: 3 to 64-68 answer tokens (with the end of turn) in every family


def _sample_records(n: int, name: str = "theta_sample_train.json") -> list[dict]:
    from theta_ai.config.samples import sample_path

    return json.loads(Path(sample_path(name)).read_text(encoding="utf-8"))[:n]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A handful of the bundled sample pairs: ``train`` (4), ``val`` (2), and ``uneven`` (4 pairs whose answers
    are cut to 1, 4, 18 and 45 words, so their answer token counts differ by a factor of about 20)."""
    root = tmp_path_factory.mktemp("family_data")
    train = _sample_records(4)
    uneven = [dict(r, answer=" ".join(r["answer"].split()[:n]).rstrip(".,") + ".")
              for r, n in zip(_sample_records(8)[4:], ANSWER_LENGTHS)]
    return {"train": write_json(root / "train.json", train),
            "val": write_json(root / "val.json", _sample_records(2, "theta_sample_val.json")),
            "uneven": write_json(root / "uneven.json", uneven), "root": root}


def _config(tmp_path: Path, model_dir: Path, data: dict, train: str = "train", **overrides):
    """A resolved ThetaConfig for a short fp32 run on ``model_dir`` inside ``tmp_path``."""
    from theta_ai.config import resolve_config

    values = {"data": [str(data[train])], "val_data": [str(data["val"])], "model_name": str(model_dir),
              "epochs": 1.0, "batch_size": 4, "grad_accum": 1, "learning_rate": 1e-3, "warmup_steps": 0,
              "precision": "fp32", "max_seq_length": 256, "generation_eval": 0, "grad_log_steps": 0,
              "logging_steps": 1, "checkpoint_dir": str(tmp_path / "models"), "logdir": str(tmp_path / "logs")}
    values.update(overrides)
    return resolve_config(values)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------- one library training step


_EPOCH_RUNS: dict = {}


def _one_epoch_run(family: str, data: dict, tmp_path_factory) -> dict:
    """theta_ai's library run of one epoch (4 examples, batch 4: one optimizer step) on the family's model folder,
    with its epoch checkpoint; run once per family and shared by the two tests below (the training step's own
    checks and theta-eval on its checkpoint). Holds the prepared run, the weights before the step and the result."""
    if family not in _EPOCH_RUNS:
        from theta_ai.training.run import prepare_run, train

        tmp = tmp_path_factory.mktemp(f"epoch_{family}")
        cfg = _config(tmp, family_model_dir(family, tmp_path_factory), data)
        run = prepare_run(cfg)
        before = _state(run.loaded.model)
        embed_before = run.loaded.model.get_input_embeddings().weight.detach().clone()
        result = train(cfg, prepared=run)
        _EPOCH_RUNS[family] = {"run": run, "before": before, "embed_before": embed_before, "result": result,
                               "models": tmp / "models"}
    return _EPOCH_RUNS[family]


@pytest.fixture(scope="module", autouse=True)
def _forget_epoch_runs():
    yield
    _EPOCH_RUNS.clear()


@pytest.mark.parametrize("family", FAMILIES)
def test_one_training_step_masks_prompts_and_moves_the_weights(family, data, tmp_path_factory):
    from safetensors.torch import load_file

    shared = _one_epoch_run(family, data, tmp_path_factory)
    run, before, result = shared["run"], shared["before"], shared["result"]
    assert run.formatter.template == ("qa" if family == "gpt2" else "chat")
    assert len(run.train_dataset) == 4
    for row in run.train_dataset:
        labels = row["labels"]
        assert len(labels) == len(row["input_ids"]) == row["length"]
        assert labels[0] == -100, "the first token is never a target"
        assert -100 in labels and any(label != -100 for label in labels), labels
        # the targets are the input ids themselves, by position
        assert all(label in (-100, token) for label, token in zip(labels, row["input_ids"]))
    state = json.loads((shared["models"] / "theta_checkpoint_epoch_1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1  # one optimizer step
    assert math.isfinite(result.metrics["train_loss"]) and result.metrics["train_loss"] > 0
    after = load_file(str(result.final_dir / "model.safetensors"))  # theta_final, as saved
    assert after.keys() <= before.keys()
    assert [k for k in after if not torch.equal(after[k], before[k])], "no saved weight changed"
    assert all(torch.isfinite(t).all() for t in after.values())
    assert not torch.equal(run.loaded.model.get_input_embeddings().weight.detach(), shared["embed_before"])


# ---------------------------------------------------------------------------- gradient accumulation


def _one_sgd_step(tmp_path: Path, model_dir: Path, data: dict, batch_size: int, grad_accum: int, **overrides):
    """Weights and logged loss after one SGD step over the four uneven examples (dropout 0, no clipping)."""
    from theta_ai.training.run import build_trainer, prepare_run

    cfg = _config(tmp_path / f"b{batch_size}x{grad_accum}", model_dir, data, train="uneven", batch_size=batch_size,
                  grad_accum=grad_accum, learning_rate=1.0, weight_decay=0.0, dropout=0.0, group_by_length=False,
                  lr_scheduler="constant", **overrides,
                  training_args={"max_steps": 1, "optim": "sgd", "max_grad_norm": 0.0, "eval_strategy": "no",
                                 "save_strategy": "no"})
    run = prepare_run(cfg)
    try:
        trainer = build_trainer(run)
        initial = _state(run.loaded.model)
        output = trainer.train()
        assert trainer.state.global_step == 1
        return run, initial, _state(run.loaded.model), output.training_loss, trainer
    finally:
        run.close()


def _reference_loss(model, run) -> float:
    """Cross-entropy summed over every answer token of the four examples, divided by their number."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for row in run.train_dataset:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor(row["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].float()
            total += torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
            count += int((labels != -100).sum())
    return total / count


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_accumulation_matches_one_big_batch(family, data, tmp_path, tmp_path_factory):
    """Batch 4 x accumulation 1 and batch 1 x accumulation 4 over answers of 3 to ~66 tokens: the same SGD update
    and the same loss, the mean over every answer token of the window (Trainer's ``num_items_in_batch``, passed
    through ThetaTrainer's LM-head trimming), not a mean of per-micro-batch means."""
    model_dir = family_model_dir(family, tmp_path_factory)
    big, initial, after_big, loss_big, _ = _one_sgd_step(tmp_path, model_dir, data, 4, 1)
    _, initial_small, after_small, loss_small, trainer = _one_sgd_step(tmp_path, model_dir, data, 1, 4)
    answers = [sum(label != -100 for label in row["labels"]) for row in big.train_dataset]
    assert min(answers) <= 4 and max(answers) >= 40, answers  # very uneven answer lengths
    assert trainer.model_accepts_loss_kwargs, f"{family}: Trainer would not pass num_items_in_batch"
    assert trainer._accepts_logits_to_keep(), f"{family}: the LM-head trimming is not exercised"

    # the same update: SGD with lr 1 moves each weight by its gradient, so this compares the two gradients
    for name in initial:
        assert torch.equal(initial[name], initial_small[name])
    moved = 0
    for name, start in initial.items():
        scale = (after_big[name] - start).abs().max().item()
        moved += scale > 0
        # 1e-4 of the largest update: multi-threaded matmuls sum a batch of 4 in another order than 4 batches of 1
        # (seen: 1.2e-5 of it with 2 threads); a wrong normaliser is off by ~30% of it
        torch.testing.assert_close(after_small[name], after_big[name], rtol=1e-5, atol=1e-4 * max(scale, 1e-12),
                                   msg=lambda m, n=name: f"{family} {n}: {m}")
    assert moved, "the step changed nothing"

    # and the logged loss is the mean over all answer tokens of the window, in both layouts
    model, _ = tiny_family_model(family)
    model.load_state_dict(initial)
    reference = _reference_loss(model, big)
    assert loss_big == pytest.approx(reference, rel=1e-5)
    assert loss_small == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_train_on_prompt_loss_is_the_mean_over_prediction_targets(family, data, tmp_path, tmp_path_factory):
    """With --train-on-prompt the first label of a row is a real token id, yet never a prediction target (nothing
    before it predicts it): the normaliser must count ``labels[:, 1:]`` only, for every family."""
    model_dir = family_model_dir(family, tmp_path_factory)
    run, initial, _, loss, _ = _one_sgd_step(tmp_path, model_dir, data, 2, 2, train_on_prompt=True)
    assert all(row["labels"][0] != -100 for row in run.train_dataset)
    model, _ = tiny_family_model(family)
    model.load_state_dict(initial)
    assert loss == pytest.approx(_reference_loss(model, run), rel=1e-5)


# ---------------------------------------------------------------------------- LoRA


def _expected_lora_modules(family: str) -> set[str]:
    if family == "gpt2":
        per_layer = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
        return {f"transformer.h.{i}.{name}" for i in range(LAYERS) for name in per_layer}
    per_layer = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    return {f"model.layers.{i}.{name}" for i in range(LAYERS) for name in per_layer}


@pytest.mark.parametrize("family", FAMILIES)
def test_default_lora_targets_are_the_blocks_linear_layers(family):
    from theta_ai.model.lora import wrap_with_lora

    model, _ = tiny_family_model(family)
    peft_model = wrap_with_lora(model)
    assert set(peft_model.peft_config["default"].target_modules) == LORA_TARGETS[family]
    inner = peft_model.base_model.model
    wrapped = {name for name, module in inner.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == _expected_lora_modules(family)
    assert not hasattr(inner.get_output_embeddings(), "lora_A")
    assert {name for name, p in peft_model.named_parameters() if p.requires_grad} == {
        f"base_model.model.{module}.lora_{ab}.default.weight" for module in wrapped for ab in "AB"}


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_merge_keeps_the_logits_and_the_tied_head(family, data, tmp_path, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from theta_ai.model.merge import merge_adapter
    from theta_ai.training.run import prepare_run, train

    model_dir = family_model_dir(family, tmp_path_factory)
    cfg = _config(tmp_path, model_dir, data, lora=True, lora_dropout=0.0, learning_rate=2e-2,
                  training_args={"max_steps": 1, "eval_strategy": "no", "save_strategy": "no"})
    run = prepare_run(cfg)
    result = train(cfg, prepared=run)
    adapter_config = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert set(adapter_config["target_modules"]) == LORA_TARGETS[family]
    merged_dir = merge_adapter(result.final_dir, tmp_path / "merged")

    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    adapted = run.loaded.model.eval()  # the trained PeftModel, adapters unmerged
    assert type(merged) is type(base)
    assert not any("lora" in key for key in merged.state_dict())
    ids = torch.tensor([run.train_dataset[0]["input_ids"]])
    with torch.no_grad():
        expected, got, before = (m(input_ids=ids).logits for m in (adapted, merged, base))
    assert (expected - before).abs().max() > 1e-3, "the adapter step changed nothing"
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    embed, head = merged.get_input_embeddings().weight, merged.get_output_embeddings().weight
    assert merged.config.tie_word_embeddings is TIED[family]
    assert (head.data_ptr() == embed.data_ptr()) is TIED[family]
    # LoRA never touches the embedding or the head: both are still the base model's
    assert torch.equal(embed, base.get_input_embeddings().weight)
    assert torch.equal(head, base.get_output_embeddings().weight)


# ---------------------------------------------------------------------------- theta-train + theta-eval


def _check_eval_results(results: dict, family: str) -> None:
    from theta_ai.metrics import TEXT_METRIC_KEYS

    assert set(results["metrics"]) == set(TEXT_METRIC_KEYS) | {"perplexity", "answer_tokens"}
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in results["metrics"].values())
    assert results["num_examples"] == 2 and results["settings"]["template"] == ("qa" if family == "gpt2" else "chat")


@pytest.mark.parametrize("family", FAMILIES)
def test_theta_eval_on_a_theta_train_checkpoint(family, data, tmp_path, tmp_path_factory):
    """theta-train's checkpoint of each family (the one-epoch run above), evaluated by theta-eval's library core
    (the CLI: the test below)."""
    from theta_ai.eval.runner import EvalSettings, evaluate_model, write_outputs

    models = _one_epoch_run(family, data, tmp_path_factory)["models"]
    result = evaluate_model(models / "theta_checkpoint_epoch_1", None, EvalSettings(batch_size=2, max_new_tokens=4))
    paths = write_outputs(result, tmp_path / "eval")
    _check_eval_results(json.loads(paths["results"].read_text()), family)
    assert len(paths["predictions"].read_text().splitlines()) == 2


@pytest.mark.slow
@pytest.mark.extended
def test_theta_train_and_theta_eval_commands_touch_no_network(data, tmp_path, tmp_path_factory):
    """The two commands as a user runs them, on a real tokenizer's model, with every network call trapped."""
    from cli_runner import NETWORK_GUARD

    family = "gpt2"
    model_dir = family_model_dir(family, tmp_path_factory)
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD)
    log = tmp_path / "network.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(guard), THETA_NETWORK_LOG=str(log), OMP_NUM_THREADS="1")

    def theta(tool: str, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([str(BIN / tool), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{tool} {family}: {result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr
        return result

    theta("theta-train", "--data", str(data["train"]), "--val-data", str(data["val"]), "--model-name", str(model_dir),
          "--epochs", "1", "--batch-size", "4", "--grad-accum", "1", "--warmup-steps", "0", "--max-seq-length", "256",
          "--generation-eval", "0", "--grad-log-steps", "0", "--checkpoint-dir", "m", "--logdir", "logs")
    checkpoint = tmp_path / "m" / "theta_checkpoint_epoch_1"
    theta("theta-eval", "--model-path", str(checkpoint), "--max-new-tokens", "4", "--batch-size", "2",
          "--output", "eval")
    _check_eval_results(json.loads((tmp_path / "eval" / "eval_results.json").read_text()), family)
    assert len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == 2
    assert not log.exists(), f"network access attempted: {log.read_text()}"
