"""The training loss on answer tokens only: the LM head runs where an answer token is predicted, and, for
large vocabularies, a slice of those positions at a time, so a batch's logits never exist at once.

The answer-token head (every model whose head passes the proof below): the collator lists, on the CPU, the
positions whose next token is an answer token (:func:`theta_ai.data.collate.answer_positions`); the model runs
with its LM head replaced by the identity (its output is then the final hidden states) and
:func:`answer_cross_entropy` applies the head weight to those positions only. Prompt, padding and the last
position make no logits at all, which is most of a chat example's positions.

Either way the head and the cross-entropy are one fused step (:mod:`theta_ai.training.linear_cross_entropy`):
the forward pass makes the logits, turns them in place into the loss and its gradient and multiplies that by the
head weight and the hidden states there and then, so autograd keeps no logits at all, only the head's gradients
(``vocabulary x width`` for the weight, ``positions x width`` for the hidden states), and no matmul is run twice.

The chunked loss (``--chunked-loss``): for Qwen's 151,669-token vocabulary, batch 4 x 512 tokens of fp32 logits
is 1.2 GB: a tenth of a 12 GB card, and the plain path keeps two such tensors for the backward pass and makes a
third there. With the chunked loss the fused step makes the logits of ``CHUNK_BYTES`` worth of answer positions at
a time in one reused buffer (:func:`chunk_rows`), so at most that much of them exists at once; without it, one
buffer holds the logits of all of a batch's answer positions. ``--chunked-loss auto`` uses slices for
vocabularies of :data:`AUTO_MIN_VOCAB` tokens and more, where the logits dominate a 12 GB card's memory (see
:func:`use_chunked_loss`).

Both are the model's own ``ForCausalLM`` loss (shift by one, fp32 logits, sum over answer tokens divided by
``num_items_in_batch``), so they agree with the plain path to rounding; :func:`check_chunked_loss` proves that on
the real model before training (a head that does more than a linear map, like Gemma 2's logit soft-capping,
fails the proof: whole logits are computed from the first trained position on, with a one-line note when the
user asked for the chunked loss).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from theta_ai.data.collate import answer_positions
from theta_ai.planner.activations import AUTO_MIN_VOCAB, CHUNK_BYTES  # shared with the memory planner
from theta_ai.training.linear_cross_entropy import linear_cross_entropy

IGNORE_INDEX = -100


class _HiddenStates(torch.nn.Module):
    """Stands in for the LM head while the model runs: returns the final hidden states unchanged."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


# One instance for every step and model: torch.compile guards on the module it finds in the head's place, and a
# new object every step would recompile the model every step.
_IDENTITY = _HiddenStates()


def _causal_lm(model):
    """The transformers model under DDP/accelerate and peft wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def output_head(model) -> tuple[torch.nn.Module, str, torch.nn.Linear] | None:
    """``(parent, attribute, head)`` of the model's LM head when it is a plain ``nn.Linear`` child, else None."""
    base = _causal_lm(model)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        return None
    for name, child in base.named_children():
        if child is head:
            return base, name, head
    return None


@contextmanager
def hidden_states_out(model) -> Iterator[torch.nn.Linear]:
    """While inside, the model's "logits" are its final hidden states; yields the real head."""
    found = output_head(model)
    if found is None:
        raise ValueError("the model's LM head is not a plain linear layer")
    parent, name, head = found
    setattr(parent, name, _IDENTITY)
    try:
        yield head
    finally:
        setattr(parent, name, head)


def chunk_rows(vocab_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Positions per slice: ``chunk_bytes`` of fp32 logits, at least 64."""
    return max(64, chunk_bytes // (4 * vocab_size))


def answer_cross_entropy(hidden: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor, head: torch.nn.Linear,
                         num_items_in_batch=None, rows: int | None = None) -> torch.Tensor:
    """The causal-LM loss of the answer positions only: ``hidden`` (``batch x time x width``) at the flat
    ``positions`` (``row * time + t``, see :func:`theta_ai.data.collate.answer_positions`) against ``targets``.

    The LM head runs on exactly the positions that predict a trained label, never on prompt or padding positions.
    ``rows``: the fused head and loss (:func:`theta_ai.training.linear_cross_entropy.linear_cross_entropy`) make
    the logits of that many positions at a time (the chunked loss: at most ``rows x vocabulary`` exist at once);
    None: of all answer positions at once. Neither keeps logits for the backward pass, nor recomputes any.
    The summed loss is divided by ``num_items_in_batch`` (the answer tokens of the whole accumulation window) or,
    without it, by this batch's answer tokens.
    """
    flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions.to(hidden.device))
    total = linear_cross_entropy(flat, head.weight, head.bias, targets.to(hidden.device), rows)
    if num_items_in_batch is None:
        num_items_in_batch = targets.numel()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def chunked_cross_entropy(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Linear,
                          num_items_in_batch=None, rows: int | None = None) -> torch.Tensor:
    """The causal-LM loss of ``hidden`` (``batch x time x width``) against ``labels`` (``batch x time``), slice by slice.

    Position ``t`` predicts ``labels[:, t + 1]``; only positions with a trained label go through the head
    (:func:`answer_cross_entropy`; finding them here reads the labels, a host sync on a GPU, so the training
    step takes them from the collator instead).
    """
    positions, targets = answer_positions(labels)
    return answer_cross_entropy(hidden, positions, targets, head, num_items_in_batch,
                                rows or chunk_rows(head.out_features))


def use_chunked_loss(setting: str, model) -> bool:
    """``--chunked-loss``: ``on``, ``off``, or ``auto``: on for vocabularies of :data:`AUTO_MIN_VOCAB` and more.

    With the fused head and loss slicing costs no recomputation, only smaller matmuls: measured side by side
    (benchmarks/train_throughput.py, a Qwen3 config with its 151,669-token vocabulary, 2 CPU cores) the sliced
    epoch was within 3% of the unsliced one on both data sets and peaked 0-9% lower. On a 12 GB card the bound
    is what matters: a batch's whole answer logits (4 x 512 x 151,669 fp32 = 1.2 GB) never exist.
    """
    if setting == "off" or output_head(model) is None:
        return False
    if setting == "on":
        return True
    return int(_causal_lm(model).config.vocab_size) >= AUTO_MIN_VOCAB


def name_causal_lm_loss(model) -> None:
    """Give a causal LM whose ``loss_type`` is None the name of the loss it already uses, ``ForCausalLM``.

    Why (checked against transformers 5.24.0): ``PreTrainedModel`` derives ``loss_type`` from the class name, so
    ``GPT2LMHeadModel`` (GPT-2, theta-tiny) gets None; its ``loss_function`` then falls back to ``ForCausalLMLoss``
    (with a warning), but Trainer's ``__init__`` reads the None as "this loss does not shift labels" and counts
    ``num_items_in_batch`` over ``labels`` instead of ``labels[..., 1:]``. Each row's first label, never a
    prediction target, was counted: with ``--train-on-prompt`` the loss was divided by targets + rows.
    Naming the loss changes nothing else (``LOSS_MAPPING["ForCausalLM"]`` is the fallback itself);
    tests/test_families.py fails when the count is wrong again.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model's transformers model
    if (base is not None and getattr(base, "loss_type", "") is None
            and not getattr(getattr(base, "config", None), "is_encoder_decoder", False)
            and type(base).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()):
        base.loss_type = "ForCausalLM"


def check_chunked_loss(model, rtol: float = 1e-4) -> str | None:
    """Prove on the real model that the chunked loss is the model's own; None when it is, else why not."""
    base = _causal_lm(model)
    name_causal_lm_loss(base)  # what ThetaTrainer does anyway; unnamed, transformers warns on the labelled forward
    # Soft-capping after the head (Gemma 2): refused by name, since on small logits (a fresh or a well-behaved
    # model) tanh capping is within any tolerance of the identity and the numbers below could not tell.
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        return f"its logits are soft-capped after the head (final_logit_softcapping={cap})"
    vocab = int(base.config.vocab_size)
    generator = torch.Generator().manual_seed(0)
    device = next(base.parameters()).device
    ids = torch.randint(0, vocab, (2, 12), generator=generator).to(device)
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX
    was_training = base.training
    base.eval()
    try:
        with torch.no_grad():
            plain = base(input_ids=ids, labels=labels, use_cache=False).loss.float()
            with hidden_states_out(base) as head:
                hidden = base(input_ids=ids, use_cache=False).logits
            chunked = chunked_cross_entropy(hidden, labels, head, rows=5)
    except Exception as exc:  # a forward that does not return hidden states through the head
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}" if str(exc) else type(exc).__name__
    finally:
        base.train(was_training)
    if not torch.allclose(plain, chunked, rtol=rtol, atol=1e-6):
        return f"its loss {plain.item():.6f} is not a plain linear head's {chunked.item():.6f}"
    return None


def loss_path_choice(setting: str, model, notes: list[str]) -> tuple[bool, bool]:
    """``(chunked, answer_head)``: how this run's training step computes the loss, decided once, after one proof.

    ``answer_head``: the LM head runs on the answer positions only (:func:`answer_cross_entropy`), wherever the
    model's head is a plain linear layer whose loss is the model's own (:func:`check_chunked_loss`). ``chunked``
    (``--chunked-loss``, :func:`use_chunked_loss`): those positions a slice at a time. Where the proof fails, the
    step computes whole logits from the first trained position on: the same loss with more work, which is said in
    one line only when the user asked for the chunked loss.
    """
    wanted = use_chunked_loss(setting, model)
    if output_head(model) is None:
        if setting == "on":
            notes.append("--chunked-loss on: the model's LM head is not a plain linear layer; the loss is computed "
                         "from whole logits")
        return False, False
    problem = check_chunked_loss(model)
    if problem is not None:
        if wanted:
            notes.append(f"--chunked-loss {setting}: the slice-by-slice loss differs from this model's own "
                         f"({problem}); the loss is computed from whole logits")
        return False, False
    return wanted, True
