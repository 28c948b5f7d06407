"""Right padding to the longest row, padding-free packing, and the packing isolation check on real tiny models."""

from __future__ import annotations

import pytest
import torch

from theta_ai.data import (IGNORE_INDEX, Example, ExampleFormatter, PackingUnsupportedError, PaddingCollator,
                           check_packing_isolation, packing_collator)

M = IGNORE_INDEX


def tiny_gpt2(attn: str = "sdpa"):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0))
    model.config._attn_implementation = attn
    return model


def tiny_llama(attn: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                         bos_token_id=1, eos_token_id=2, pad_token_id=0))
    model.config._attn_implementation = attn
    return model


class DropsPositionIds(torch.nn.Module):
    """A model whose forward accepts ``position_ids`` but ignores them, so packed rows see each other."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids, position_ids=None, **kwargs):
        return self.inner(input_ids=input_ids, **kwargs)


class RejectsPositionIds(torch.nn.Module):
    """A model whose forward cannot take packed inputs at all."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids):
        return self.inner(input_ids=input_ids)


# ------------------------------------------------------------------------------------------ PaddingCollator


def test_padding_collator_pads_right_to_the_longest_row():
    features = [{"input_ids": [5, 6, 7], "labels": [M, 6, 7]},
                {"input_ids": [8, 9, 10, 11, 12], "labels": [M, M, 10, 11, 12]},
                {"input_ids": [13], "labels": [13]}]
    batch = PaddingCollator(pad_token_id=0)(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(t.dtype == torch.long and t.shape == (3, 5) for t in batch.values())  # 5, not 512
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0], [8, 9, 10, 11, 12], [13, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[M, 6, 7, M, M], [M, M, 10, 11, 12], [13, M, M, M, M]]


def test_padding_collator_pad_to_multiple_of():
    features = [{"input_ids": [5, 6, 7], "labels": [M, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = PaddingCollator(pad_token_id=99, pad_to_multiple_of=4)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 99], [8, 99, 99, 99]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[M, 6, 7, M], [8, M, M, M]]
    # already a multiple: no extra padding
    assert PaddingCollator(pad_token_id=0, pad_to_multiple_of=3)(features)["input_ids"].shape == (2, 3)


def test_padding_collator_on_formatted_rows(qa_tokenizer):
    """Rows straight from encode_all (with their extra ``length`` column) batch as they are."""
    fmt = ExampleFormatter(qa_tokenizer, template="qa", max_seq_length=512)
    dataset, _ = fmt.encode_all([Example.from_qa("What is TCP?", "A transport protocol."),
                                 Example.from_qa("What is a router?", "A device that forwards packets.")])
    rows = [dataset[0], dataset[1]]
    batch = PaddingCollator(pad_token_id=qa_tokenizer.pad_token_id)(rows)
    width = max(r["length"] for r in rows)
    assert batch["input_ids"].shape == (2, width) and width < 30
    for i, row in enumerate(rows):
        n = row["length"]
        assert batch["input_ids"][i].tolist() == row["input_ids"] + [qa_tokenizer.pad_token_id] * (width - n)
        assert batch["labels"][i].tolist() == row["labels"] + [M] * (width - n)
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)


# ------------------------------------------------------------------------------------------ packing


def test_packing_collator_output():
    collate = packing_collator()
    batch = collate([{"input_ids": [5, 6, 7], "labels": [M, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}])
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]  # one row, no padding
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]  # restarting at each example
    # -100 at the start of every example: no token is predicted across the boundary
    assert batch["labels"].tolist() == [[M, 6, 7, M, 9]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_check_packing_isolation_passes_on_real_models(build, attn):
    model = build(attn)
    model.train()
    assert check_packing_isolation(model) is None
    assert model.training  # the train/eval mode is put back


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_packed_batch_matches_separate_rows(build):
    """What the check proves, on the collator's real output: each packed example's logits equal its own run.

    Without a KV cache, as in training (Trainer sets ``config.use_cache`` from ``TrainingArguments.use_cache``,
    False by default): transformers derives the packed-sequence mask from ``position_ids`` only when no cache is used.
    """
    model = build().eval()
    features = [{"input_ids": [3, 4, 5, 6], "labels": [M, 4, 5, 6]}, {"input_ids": [7, 8, 9], "labels": [M, 8, 9]}]
    batch = packing_collator()(features)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        first = model(input_ids=torch.tensor([[3, 4, 5, 6]])).logits[0]
        second = model(input_ids=torch.tensor([[7, 8, 9]])).logits[0]
    torch.testing.assert_close(packed[:4], first, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(packed[4:], second, atol=1e-4, rtol=1e-3)


def test_check_packing_isolation_refuses_a_model_that_ignores_position_ids():
    model = DropsPositionIds(tiny_gpt2())
    with pytest.raises(PackingUnsupportedError) as info:
        check_packing_isolation(model)
    assert str(info.value) == ("--packing: DropsPositionIds with attention 'sdpa' lets packed examples attend to each "
                               "other; train without --packing (length grouping already avoids most padding)")


def test_check_packing_isolation_refuses_a_model_that_cannot_take_packed_rows():
    model = RejectsPositionIds(tiny_gpt2())
    model.train()
    with pytest.raises(PackingUnsupportedError) as info:
        check_packing_isolation(model)
    assert str(info.value) == ("--packing: this model cannot run packed rows (RejectsPositionIds.forward() got an "
                               "unexpected keyword argument 'position_ids'); train without --packing")
    assert model.training
