"""Speed-ups keep the loss: skipping the LM head where no answer label exists gives the same loss and gradients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

from theta_ai.data import PaddingCollator
from theta_ai.training.trainer import ThetaTrainer
from theta_fixtures import build_tiny_llama


def _batch(vocab: int):
    torch.manual_seed(0)
    rows = []
    for prompt, answer in ((9, 5), (14, 3), (6, 11)):  # different prompt lengths, right padding
        ids = torch.randint(1, vocab, (prompt + answer,)).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return PaddingCollator(pad_token_id=0)(rows)


def _loss_and_grads(trainer, model, batch, trim: bool):
    trainer._logits_to_keep_ok = trim
    model.zero_grad()
    n_items = (batch["labels"][:, 1:] != -100).sum()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_items)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_trimmed_head_gives_the_same_loss_and_gradients(tmp_path, arch):
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=300, bos_token_id=0,
                                           eos_token_id=0, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))
    else:
        from transformers import AutoModelForCausalLM

        folder = build_tiny_llama(tmp_path / "llama", ["some words for the tokenizer to learn"] * 20)
        model = AutoModelForCausalLM.from_pretrained(folder)
    model.train()
    trainer = ThetaTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none"))
    batch = _batch(model.config.vocab_size)
    plain_loss, plain_grads = _loss_and_grads(trainer, model, batch, trim=False)
    trim_loss, trim_grads = _loss_and_grads(trainer, model, batch, trim=True)
    assert trainer._accepts_logits_to_keep() is True
    assert torch.allclose(plain_loss, trim_loss, rtol=1e-5, atol=1e-6), (plain_loss, trim_loss)
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, trim_grads[name], rtol=1e-4, atol=1e-6), name


def test_trim_really_skips_the_leading_prompt_columns(tmp_path):
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0))
    trainer = ThetaTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none"))
    seen = {}
    head = model.lm_head
    handle = head.register_forward_hook(lambda mod, args, out: seen.update(columns=out.shape[1]))
    batch = _batch(100)  # the shortest prompt is 6 tokens: logit columns 0..4 predict no label
    trainer.compute_loss(model, dict(batch))
    handle.remove()
    assert seen["columns"] == batch["input_ids"].shape[1] - 5


def test_the_collator_marks_the_trimming_start_so_the_step_computes_nothing_on_the_device(tmp_path, monkeypatch):
    """MarkedCollator finds the first trained column (and counts the real tokens) on the CPU; compute_loss only
    reads the marks (no .nonzero() + int() on device tensors, a host sync per micro-batch on a GPU), hides them
    from the model, and trims exactly as before. A batch without marks still trims, computing the start itself."""
    import theta_ai.training.trainer as trainer_module
    from theta_ai.data import MarkedCollator
    from theta_ai.data.collate import ANSWER_START, REAL_TOKENS

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0,
                                       resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))
    model.train()  # training mode: the real tokens are counted (evaluation batches are not)
    trainer = ThetaTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none"))
    plain = _batch(100)
    torch.manual_seed(0)
    rows = []
    for prompt, answer in ((9, 5), (14, 3), (6, 11)):
        ids = torch.randint(1, 100, (prompt + answer,)).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    marked = MarkedCollator(PaddingCollator(pad_token_id=0))(rows)
    assert marked[ANSWER_START] == 5 and marked[REAL_TOKENS] == 14 + 17 + 17 == int(plain["attention_mask"].sum())
    seen = {}
    model.lm_head.register_forward_hook(lambda mod, args, out: seen.update(columns=out.shape[1]))

    def no_device_work(batch):
        raise AssertionError("compute_loss searched the labels although the collator marked the batch")

    monkeypatch.setattr(trainer_module, "mark_batch", no_device_work)
    marked_loss = trainer.compute_loss(model, dict(marked))
    assert seen["columns"] == plain["input_ids"].shape[1] - 5
    assert trainer._real_tokens_pending == 48
    monkeypatch.undo()
    plain_loss = trainer.compute_loss(model, dict(plain))  # unmarked: the start is computed here
    assert seen["columns"] == plain["input_ids"].shape[1] - 5 and torch.equal(marked_loss, plain_loss)
    assert trainer._real_tokens_pending == 48


def test_the_token_count_is_every_real_token_of_every_epoch(tmp_path):
    """state.num_input_tokens_seen (throughput/tokens_per_second) from the collator's counts: exactly the
    examples' lengths summed over the epochs, with no per-step gather."""
    from theta_fixtures import tiny_train_config

    from theta_ai.config import resolve_config
    from theta_ai.training.run import prepare_run, train

    run = prepare_run(resolve_config(tiny_train_config(tmp_path, n=24, epochs=2.0)))
    assert run.training_args.include_num_input_tokens_seen == "no"
    result = train(run.cfg, prepared=run)
    state = json.loads((Path(result.checkpoints[-1]) / "trainer_state.json").read_text())
    assert state["num_input_tokens_seen"] == 2 * sum(run.train_dataset["length"])


def test_augmentation_in_a_worker_process_trains_exactly_as_on_the_training_thread(tmp_path):
    """--augment defaults to one dataloader worker (augmenting and tokenizing beside the step); new workers every
    epoch see the epoch, so the views, and the trained weights, are bit-identical to augmenting in-process."""
    from theta_fixtures import tiny_train_config, weights_sha256

    from theta_ai.config import resolve_config
    from theta_ai.training.run import prepare_run, train

    digests = {}
    for workers in (None, 0):
        folder = tmp_path / f"workers_{workers}"
        run = prepare_run(resolve_config(tiny_train_config(folder, n=24, epochs=2.0, augment=True,
                                                           dataloader_workers=workers, eval_batch_size=3)))
        assert run.training_args.dataloader_num_workers == (1 if workers is None else 0)
        assert (run.training_args.per_device_eval_batch_size, run.training_args.per_device_train_batch_size) == (3, 8)
        result = train(run.cfg, prepared=run)
        digests[workers] = weights_sha256(Path(result.checkpoints[-1]))
    assert digests[None] == digests[0]


def test_theta_eval_loads_weights_in_the_training_precision_on_a_gpu(monkeypatch):
    from theta_ai.eval.runner import eval_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a Turing card
    assert [eval_dtype({"precision": p}, "cuda") for p in ("fp16", "bf16", "fp32")] == ["float16", "bfloat16", None]
    assert eval_dtype({}, "cuda:0") == "float16"  # a folder theta-train did not write: half precision the card has
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert eval_dtype({}, "cuda") == "bfloat16"
    assert eval_dtype({"precision": "fp16"}, "cpu") is None  # fp32 on a CPU, whatever training used
