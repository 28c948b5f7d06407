"""The answer-token head and the chunked cross-entropy (training/loss.py) on tiny models of the real families: the
same loss and gradients as the plain path, without keeping logits for the backward pass."""

from __future__ import annotations

import pytest
import torch
from families import tiny_family_model
from transformers import TrainingArguments

from theta_ai.data import MarkedCollator, PaddingCollator
from theta_ai.training.loss import AUTO_MIN_VOCAB, check_chunked_loss, use_chunked_loss
from theta_ai.training.trainer import ThetaTrainer


def _batch(vocab: int):
    generator = torch.Generator().manual_seed(0)
    rows = []
    for prompt, answer in ((9, 25), (14, 3), (6, 40)):  # very different answer lengths, right padding
        ids = torch.randint(1, vocab, (prompt + answer,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return MarkedCollator(PaddingCollator(pad_token_id=0))(rows)


def _step(trainer, model, batch, chunked: bool, answer_head: bool = False):
    """Loss, gradients and the bytes autograd saved for backward, for one compute_loss call."""
    trainer.chunked_loss, trainer.answer_head = chunked, answer_head
    model.zero_grad()
    saved = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    n_items = (batch["labels"][:, 1:] != -100).sum()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_items)
    loss.backward()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    activations = sum(size for ptr, size in saved.items() if ptr not in params)
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, activations


@pytest.mark.parametrize("family", ["gpt2", "llama3", "qwen3", "gemma3"])
def test_the_chunked_loss_gives_the_plain_loss_and_gradients_without_the_logits(family, tmp_path):
    model, _ = tiny_family_model(family)
    if family == "gpt2":
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    model.train()
    trainer = ThetaTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    assert check_chunked_loss(model) is None
    batch = _batch(model.config.vocab_size)
    plain_loss, plain_grads, plain_saved = _step(trainer, model, batch, chunked=False)
    answer_loss, answer_grads, answer_saved = _step(trainer, model, batch, chunked=False, answer_head=True)
    chunked_loss, chunked_grads, chunked_saved = _step(trainer, model, batch, chunked=True)
    for loss, grads in ((answer_loss, answer_grads), (chunked_loss, chunked_grads)):
        torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=0)
        assert plain_grads.keys() == grads.keys()
        for name, grad in plain_grads.items():  # within 1e-5 of the largest gradient of the tensor
            assert (grads[name] - grad).abs().max() <= 1e-5 * grad.abs().max() + 1e-9, name
    # the plain path keeps fp32 logits of every trimmed position for backward (from the first trained column on,
    # the other rows' prompt and padding positions included: 3 rows x 41 columns); the answer-token head keeps
    # none, in one slice or several: its forward pass made the head's gradients (training/linear_cross_entropy.py)
    # and keeps those instead (vocabulary x width for the weight, answers x width for the hidden states)
    vocab_bytes = model.config.vocab_size * 4
    head_grad_bytes = model.get_output_embeddings().weight.numel() * 4
    positions = batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - batch["theta_answer_start"])
    answers = int(len(batch["theta_answer_targets"]))
    assert answers == 25 + 3 + 40 and positions == 3 * (46 - 5)
    assert plain_saved >= positions * vocab_bytes
    assert head_grad_bytes <= answer_saved <= plain_saved - positions * vocab_bytes + head_grad_bytes
    assert chunked_saved == answer_saved


def test_auto_uses_it_for_large_vocabularies_only():
    small, _ = tiny_family_model("gpt2")
    large, _ = tiny_family_model("qwen3")
    assert small.config.vocab_size < AUTO_MIN_VOCAB <= large.config.vocab_size
    assert [use_chunked_loss(s, small) for s in ("auto", "on", "off")] == [False, True, False]
    assert [use_chunked_loss(s, large) for s in ("auto", "on", "off")] == [True, True, False]


def test_a_head_that_is_not_a_plain_linear_map_fails_the_proof_and_the_run_says_so():
    """Logit soft-capping (Gemma 2 style) after the head: the slices would skip it, so the plain loss is kept."""
    from theta_ai.training.loss import loss_path_choice

    model, _ = tiny_family_model("gemma3")
    model.config.final_logit_softcapping = 5.0
    assert check_chunked_loss(model) == "its logits are soft-capped after the head (final_logit_softcapping=5.0)"
    notes: list[str] = []
    assert loss_path_choice("on", model, notes) == (False, False)
    assert notes == ["--chunked-loss on: the slice-by-slice loss differs from this model's own (its logits are "
                     "soft-capped after the head (final_logit_softcapping=5.0)); the loss is computed from whole logits"]
    assert loss_path_choice("off", model, notes) == (False, False) and len(notes) == 1  # not asked for: no note


def test_training_runs_the_head_on_answer_positions_wherever_the_proof_passes(tmp_path):
    """theta-train's step takes the answer-token head for every plain linear head (theta-tiny here: a 2,048-token
    vocabulary, so no slices), and the whole-logits path where the head does more than a linear map."""
    from theta_fixtures import tiny_train_config

    from theta_ai.config import resolve_config
    from theta_ai.training.loss import loss_path_choice
    from theta_ai.training.run import prepare_run

    run = prepare_run(resolve_config(tiny_train_config(tmp_path, n=16)))
    assert (run.answer_head, run.chunked_loss) == (True, False)
    capped, _ = tiny_family_model("gemma3")
    capped.config.final_logit_softcapping = 5.0
    assert loss_path_choice("auto", capped, []) == (False, False)
    plain, _ = tiny_family_model("gemma3")  # 262k vocabulary: auto slices it
    assert loss_path_choice("auto", plain, []) == (True, True)
    assert loss_path_choice("off", plain, []) == (False, True)
