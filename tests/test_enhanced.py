"""Enhanced training: augmentation on the fly, learning-rate schedules, regularization, early stopping, spike guard."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from theta_ai.config import resolve_config
from theta_ai.data import ExampleFormatter
from theta_ai.training.run import build_trainer, prepare_run, train
from theta_fixtures import qa_records, tiny_train_config, write_json

ROOT = Path(__file__).resolve().parents[1]


def state_of(folder: Path) -> dict:
    return json.loads((folder / "trainer_state.json").read_text())


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------------------- augmentation


def test_augmentation_is_train_only_and_changes_each_epoch(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, augment=True)))
    dataset = run.trainer_train_dataset
    assert type(dataset).__name__ == "AugmentedDataset" and len(dataset) == len(run.train_dataset)
    views = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        views.append([dataset[i]["input_ids"] for i in range(len(dataset))])
    changed = sum(a != b for a, b in zip(*views))
    assert changed >= len(dataset) // 3, changed
    dataset.set_epoch(0)
    assert [dataset[i]["input_ids"] for i in range(len(dataset))] == views[0]  # seeded: the same view again
    # answers (and so labels) are untouched by the default question-side mix
    for i in range(len(dataset)):
        row = dataset[i]
        answer = [t for t, l in zip(row["input_ids"], row["labels"]) if l != -100]
        assert answer == [l for l in run.train_dataset[i]["labels"] if l != -100]
    # validation data is never augmented
    for example, row in zip(run.val_examples, run.val_dataset):
        assert row["input_ids"] == run.formatter.encode(example)["input_ids"]


def test_augmented_run_resumes_exactly(tmp_path):
    full = train(resolve_config(tiny_train_config(tmp_path / "full", augment=True)))
    part = tmp_path / "part" / "models"
    shutil.copytree(full.checkpoint_dir / "theta_checkpoint_epoch_1", part / "theta_checkpoint_epoch_1")
    resumed = train(resolve_config(tiny_train_config(tmp_path / "part", augment=True, resume="auto")))
    assert same_weights(resumed.final_dir, full.final_dir)


def test_dry_run_shows_augmented_pairs(tmp_path):
    write_json(tmp_path / "train.json", [{"question": "What is a router?", "answer": "A device that forwards packets."},
                                         *qa_records(30)])
    proc = subprocess.run([sys.executable, "-m", "theta_ai.cli.train", "--data", "train.json", "--model-name",
                           "theta-tiny", "--dry-run", "--augment"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "augmentation: question side: rephrase 0.25" in proc.stdout
    assert proc.stdout.count("  original : ") == 3 and proc.stdout.count("  augmented: ") == 3


# ---------------------------------------------------------------------------- schedules


def _lrs(run_dir: Path) -> dict[int, float]:
    state = state_of(max(run_dir.glob("theta_checkpoint_epoch_*"), key=lambda p: int(p.name.rsplit("_", 1)[1])))
    return {h["step"]: h["learning_rate"] for h in state["log_history"] if "learning_rate" in h}


@pytest.mark.parametrize("scheduler", ["linear", "cosine", "cosine-restarts", "constant"])
def test_learning_rate_follows_the_schedule(tmp_path, scheduler):
    values = tiny_train_config(tmp_path, epochs=2.0, batch_size=4, logging_steps=1, warmup_steps=4,
                               lr_scheduler=scheduler, lr_cycles=2, learning_rate=1e-3)
    result = train(resolve_config(values))
    lrs = _lrs(result.checkpoint_dir)
    total, warmup, peak = 24, 4, 1e-3  # 48 examples / batch 4 = 12 steps per epoch

    def expected(step: int) -> float:  # the scheduler's rate after `step` scheduler steps
        if step < warmup:
            return peak * step / warmup
        progress = (step - warmup) / (total - warmup)
        if scheduler == "linear":
            return peak * (1 - progress)
        if scheduler == "cosine":
            return peak * 0.5 * (1 + math.cos(math.pi * progress))
        if scheduler == "cosine-restarts":
            return peak * 0.5 * (1 + math.cos(math.pi * ((2 * progress) % 1.0))) if progress < 1 else 0.0
        return peak

    assert sorted(lrs) == list(range(1, total + 1))
    for step, lr in lrs.items():
        assert lr == pytest.approx(expected(step - 1), abs=1e-9), (step, lr)  # Trainer logs the rate step `step` used
    if scheduler == "cosine-restarts":
        assert lrs[15] > lrs[14]  # the hard restart half way through


def test_plateau_lowers_the_rate_when_validation_stalls(tmp_path):
    # 5e-8 is too small a step to improve the validation loss by the plateau threshold (relative 1e-4),
    # and a factor of 0.1 is a change above torch's minimum (eps 1e-8), so the reduction is applied
    values = tiny_train_config(tmp_path, epochs=3.0, batch_size=4, learning_rate=5e-8, lr_scheduler="plateau",
                               lr_factor=0.1, lr_patience=0, logging_steps=12)
    run = prepare_run(resolve_config(values))
    assert "--lr-scheduler plateau has no warmup (torch's ReduceLROnPlateau); warmup is ignored" in run.notes
    result = train(run.cfg, prepared=run)
    lrs = _lrs(result.checkpoint_dir)
    # each epoch's rate is logged just before its evaluation, which then steps the plateau scheduler
    assert lrs[12] == pytest.approx(5e-8, rel=1e-6)  # epoch 1: the first evaluation sets the best
    assert lrs[24] == pytest.approx(5e-8, rel=1e-6)
    assert lrs[36] == pytest.approx(5e-9, rel=1e-6)  # epoch 2's evaluation stalled: x 0.1


def test_warmup_ratio(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, warmup_ratio=0.25)))
    assert run.training_args.warmup_steps == 0.25
    trainer = build_trainer(run)
    trainer.create_optimizer_and_scheduler(num_training_steps=24)
    assert trainer.args.get_warmup_steps(24) == 6


# ---------------------------------------------------------------------------- regularization and stopping


def test_dropout_override_reaches_config_and_modules(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, dropout=0.0)))
    model = run.loaded.model
    assert model.config.attention_dropout == 0.0  # theta-tiny is a Llama: its one dropout is in attention
    assert all(m.attention_dropout == 0.0 for m in model.modules() if hasattr(m, "attention_dropout"))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    model.train()
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)  # nothing random left


def test_train_on_prompt_trains_the_questions_and_validates_on_the_answers(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, train_on_prompt=True)))
    answers_only = ExampleFormatter(run.loaded.tokenizer, "qa", 64)
    for dataset, examples, prompt_trained in ((run.train_dataset, run.train_examples, True),
                                              (run.val_dataset, run.val_examples, False)):
        for row, example in zip(dataset, examples):
            answer_labels = answers_only.encode(example)["labels"]
            assert row["input_ids"] == answers_only.encode(example)["input_ids"]
            assert row["labels"] == (row["input_ids"] if prompt_trained else answer_labels)
    assert run.val_dataset[0]["labels"][0] == -100  # the question of a validation row is not scored


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_set_dropout_switches_off_every_dropout_of_a_model_built_with_it(family):
    """Llama-style attention hands a float copied from the config at construction to SDPA, so changing only the
    config (or only nn.Dropout modules) left --dropout 0 training with the model's own attention dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from theta_ai.model.load import set_dropout

    torch.manual_seed(0)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                           resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=2, attention_dropout=0.5))
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    model.train()
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)  # dropout is on
    changed = set_dropout(model, 0.0)
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    assert changed == (["resid_pdrop", "embd_pdrop", "attn_pdrop"] if family == "gpt2" else ["attention_dropout"])


def test_label_smoothing_is_applied_to_answer_tokens(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, label_smoothing=0.2)))
    assert run.training_args.label_smoothing_factor == 0.2
    eval_loss = build_trainer(run).evaluate()["eval_loss"]  # 8 validation rows = one batch of 8
    batch = run.collator([run.val_dataset[i] for i in range(len(run.val_dataset))])
    model = run.loaded.model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    labels = batch["labels"][:, 1:]
    active = labels != -100
    nll = -log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)[active].mean()
    uniform = -log_probs.sum(-1)[active].mean() / log_probs.shape[-1]
    assert eval_loss == pytest.approx((0.8 * nll + 0.2 * uniform).item(), rel=1e-5)
    assert abs(eval_loss - nll.item()) > 1e-4  # and it is not the plain loss


def test_neftune_noise_is_active_during_training(tmp_path):
    seen = {}

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            seen["hooks"] = len(model.get_input_embeddings()._forward_hooks)
            seen["alpha"] = getattr(model.get_input_embeddings(), "neftune_noise_alpha", None)

    train(resolve_config(tiny_train_config(tmp_path, epochs=1.0, neftune_alpha=5.0)), callbacks=[Probe()])
    assert seen == {"hooks": 1, "alpha": 5.0}


def test_early_stopping_stops_and_keeps_the_best(tmp_path):
    values = tiny_train_config(tmp_path, epochs=10.0, learning_rate=0.0, early_stopping_patience=1)  # never improves
    result = train(resolve_config(values))
    assert [p.name for p in result.checkpoints] == ["theta_checkpoint_epoch_1", "theta_checkpoint_epoch_2"]
    assert json.loads((result.best_dir / "theta_best.json").read_text())["epoch"] == 1


# ---------------------------------------------------------------------------- spike guard


class BlowUpLearningRate(TrainerCallback):
    """From the second epoch on, multiply the learning rate by a huge factor: a real divergence."""

    def on_epoch_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if round(state.epoch) == 1 and not getattr(self, "done", False):
            self.done = True
            for group in optimizer.param_groups:
                group["lr"] *= 1e5
            scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)
            scheduler.base_lrs = [lr * 1e5 for lr in scheduler.base_lrs]


def _spike_run(tmp_path, **overrides):
    values = tiny_train_config(tmp_path, epochs=4.0, batch_size=4, spike_guard=True, warmup_steps=0,
                               lr_scheduler="constant", logging_steps=1, **overrides)
    return train(resolve_config(values), callbacks=[BlowUpLearningRate()])


def test_spike_guard_rolls_back_and_recovers(tmp_path, caplog):
    result = _spike_run(tmp_path, spike_lr_factor=1e-5)
    rollbacks = [r.message for r in caplog.records if "spike guard:" in r.message]
    assert len(rollbacks) == 1 and "rolled back to the best model and multiplied the learning rate by 1e-05" in rollbacks[0]
    # training went on to the end with a sane rate, and the best model is a real, finite model
    assert [p.name for p in result.checkpoints][-1] == "theta_checkpoint_epoch_4"
    best = load_file(str(result.best_dir / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in best.values())
    lrs = [h["learning_rate"] for h in state_of(result.checkpoints[-1])["log_history"] if "learning_rate" in h]
    assert lrs[-1] == pytest.approx(2e-3 * 1e5 * 1e-5)


def test_spike_guard_stops_after_max_rollbacks_with_best_intact(tmp_path, caplog):
    result = _spike_run(tmp_path, spike_max_rollbacks=2)
    messages = [r.message for r in caplog.records if "spike guard:" in r.message]
    assert len(messages) == 2 and "and stopped (--spike-max-rollbacks 2)" in messages[-1]
    info = json.loads((result.best_dir / "theta_best.json").read_text())
    assert info["epoch"] == 1 and math.isfinite(info["value"])
    assert same_weights(result.best_dir, result.checkpoint_dir / "theta_checkpoint_epoch_1")
    assert (result.best_dir / "optimizer.pt").is_file()  # kept so a rollback restores the optimizer too
    # the final model is the rolled-back best, not the diverged weights
    assert same_weights(result.final_dir, result.best_dir)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result.log_dir)).Reload()
    assert [e.value for e in events.Scalars("theta/rollbacks")] == [1.0, 2.0]


def _saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """A model folder's tensors, whether one model.safetensors or several shards."""
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_spike_guard_rolls_back_to_a_sharded_best(tmp_path, caplog, monkeypatch):
    # A big model's save_pretrained writes shards (model-0000k-of-0000n.safetensors + an index); theta-tiny
    # (about 1.5 MB with this data's small vocabulary) does the same with a 300 kB shard size, so every
    # checkpoint and theta_best are sharded.
    from functools import partialmethod

    from transformers import PreTrainedModel

    monkeypatch.setattr(PreTrainedModel, "save_pretrained",
                        partialmethod(PreTrainedModel.save_pretrained, max_shard_size="300KB"))
    result = _spike_run(tmp_path, spike_max_rollbacks=1)
    assert not (result.best_dir / "model.safetensors").exists()
    assert len(list(result.best_dir.glob("model-*-of-*.safetensors"))) >= 3
    assert (result.best_dir / "model.safetensors.index.json").is_file()
    messages = [r.message for r in caplog.records if "spike guard:" in r.message]
    assert len(messages) == 1 and "rolled back to the best model for the 1. time and stopped" in messages[0]
    assert json.loads((result.best_dir / "theta_best.json").read_text())["epoch"] == 1
    best = _saved_tensors(result.best_dir)
    assert all(torch.isfinite(t).all() for t in best.values())
    # the model after the rollback (saved as theta_final) is exactly theta_best, not the diverged weights
    final = _saved_tensors(result.final_dir)
    assert sorted(final) == sorted(best) and all(torch.equal(final[k], best[k]) for k in best)


# ---------------------------------------------------------------------------- the enhanced preset


@pytest.mark.extended
def test_enhanced_overnight_script_runs(tmp_path):
    write_json(tmp_path / "train.json", qa_records(40))
    env = dict(os.environ, THETA_TRAIN=f"{sys.executable} -m theta_ai.cli.train", RESTART_DELAY="0")
    proc = subprocess.run(
        ["bash", str(ROOT / "examples" / "train_overnight_enhanced.sh"), "--data", "train.json", "--model-name",
         "theta-tiny", "--epochs", "2", "--batch-size", "8", "--grad-accum", "1", "--warmup-steps", "1",
         "--learning-rate", "0.002", "--max-seq-length", "64", "--generation-eval", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = next((tmp_path / "logs").glob("overnight_rtx3060-enhanced_*.log")).read_text()
    assert "theta-train: preset rtx3060-enhanced" in log and "training finished" in log
    run_info = json.loads((tmp_path / "models" / "theta_final" / "theta_run.json").read_text())
    assert run_info["preset"] == "rtx3060-enhanced"
