"""Real tokenizers of four model families, each paired with a tiny randomly initialised model of that family.

The tokenizers live in ``../shared/tokenizers/<family>/`` beside the checkout (see its README.md for what makes
each a real-world case); every helper here skips the calling test, naming the missing folder, when it is absent.

    from families import FAMILIES, family_tokenizer, tiny_family_model, family_model_dir

    tok = family_tokenizer("qwen3")                      # shared, loaded once per process: do not modify it
    model, tok = tiny_family_model("gemma3", seed=0)     # a fresh model (yours to train) + the shared tokenizer
    folder = family_model_dir("llama3", tmp_path_factory)  # saved once per session: --model-name str(folder)

The tokenizers are exactly as shipped, as a user's downloaded model folder would hold them: GPT-2 and Llama 3
have no pad token (theta_ai's ``load_tokenizer`` sets pad = EOS when it loads a folder), Qwen3 pads with
``<|endoftext|>`` and Gemma 3 with ``<pad>``. The tiny models: 2 layers, width 64 (:data:`WIDTH`; 32 with two
heads for the 128k-262k vocabularies of Llama 3, Qwen3 and Gemma 3, whose embedding and LM head dominate every step),
vocabulary ``len(tokenizer)``, the family's usual ``tie_word_embeddings`` (:data:`TIED`), the family's default
dropout (GPT-2: 0.1, the others none; theta-train's ``--dropout 0`` turns it off), fp32, seeded.
"""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path

import pytest

FAMILIES = ("gpt2", "llama3", "qwen3", "gemma3")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TOKENIZERS = SHARED / "tokenizers"

# The family's usual choice: GPT-2 ties its head to the embedding; Llama 3 (8B, the release this tokenizer
# comes from) does not; the small Qwen3 models (0.6B-4B) and Gemma 3 do.
TIED = {"gpt2": True, "llama3": False, "qwen3": True, "gemma3": True}

# peft "all-linear" on each family: every Linear/Conv1D of the blocks, never the LM head.
_DECODER_TARGETS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
LORA_TARGETS = {"gpt2": frozenset({"c_attn", "c_proj", "c_fc"}), "llama3": _DECODER_TARGETS, "qwen3": _DECODER_TARGETS,
                "gemma3": _DECODER_TARGETS}

LAYERS = 2
# Width (hidden size), in attention heads of 16 dimensions each. At width 64 Llama 3's untied 128k-token embedding
# and head are 16.4M parameters, Qwen3's tied 151k 9.7M and Gemma 3's tied 262k 16.8M, most of every step's
# time: width 32 halves them.
WIDTH = {"gpt2": 64, "llama3": 32, "qwen3": 32, "gemma3": 32}
HEAD_DIM = 16


def tokenizer_dir(name: str) -> Path:
    """``../shared/tokenizers/<name>/``; skips the calling test when the folder is missing."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; one of {', '.join(FAMILIES)}")
    folder = TOKENIZERS / name
    if not (folder / "tokenizer_config.json").is_file():
        pytest.skip(f"the real {name} tokenizer is not available: {folder} is missing (the shared/ folder "
                    "beside the checkout holds tokenizers/<family>/)")
    return folder


@functools.cache
def family_tokenizer(name: str):
    """The real tokenizer of family ``name``, loaded once per process (Gemma 3's 262k vocabulary takes seconds).

    Shared between tests: do not modify it; take ``copy.deepcopy(...)`` (or :func:`fresh_tokenizer`) first.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir(name)))


def fresh_tokenizer(name: str):
    """A private copy of :func:`family_tokenizer` (yours to modify)."""
    return copy.deepcopy(family_tokenizer(name))


def family_config(name: str, tokenizer):
    """The tiny config of family ``name`` for ``tokenizer`` (vocabulary ``len(tokenizer)``, its special ids)."""
    from transformers import Gemma3TextConfig, GPT2Config, LlamaConfig, Qwen3Config

    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=TIED[name])
    width = WIDTH[name]
    heads = width // HEAD_DIM
    if name == "gpt2":
        return GPT2Config(n_embd=width, n_layer=LAYERS, n_head=heads, n_positions=512, **ids)
    # grouped-query attention: half as many key/value heads as query heads
    decoder = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=LAYERS, num_attention_heads=heads,
                   num_key_value_heads=heads // 2, head_dim=HEAD_DIM, max_position_embeddings=512, **ids)
    if name == "llama3":
        return LlamaConfig(rope_theta=500000.0, **decoder)
    if name == "qwen3":
        return Qwen3Config(**decoder)
    # Gemma 3: one sliding-window layer and one global layer (the real models alternate 5:1); a window shorter
    # than the longer training rows, so the sliding mask really applies
    return Gemma3TextConfig(query_pre_attn_scalar=HEAD_DIM, sliding_window=32,
                            layer_types=["sliding_attention", "full_attention"], **decoder)


def tiny_family_model(name: str, seed: int = 0):
    """``(model, tokenizer)``: a freshly initialised tiny causal LM of family ``name`` and its real tokenizer.

    The model is new on every call (train it freely); the tokenizer is the shared :func:`family_tokenizer`.
    """
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = family_tokenizer(name)
    config = family_config(name, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model, tokenizer


_saved: dict[tuple[str, int, int], Path] = {}


def family_model_dir(name: str, tmp_path_factory, seed: int = 0) -> Path:
    """A model folder of family ``name`` that ``--model-name FOLDER`` loads: the tiny model (``save_pretrained``)
    with the real tokenizer files copied in as shipped, as in a downloaded hub snapshot.

    Saved once per pytest session (and seed); shared: copy it before writing into it.
    """
    key = (name, seed, id(tmp_path_factory))
    if key not in _saved or not _saved[key].is_dir():
        source = tokenizer_dir(name)
        model, _ = tiny_family_model(name, seed)
        folder = tmp_path_factory.mktemp(f"family_{name}")
        model.save_pretrained(folder)
        for file in source.iterdir():
            if file.suffix in (".json", ".txt", ".model", ".jinja"):
                shutil.copyfile(file, folder / file.name)
        _saved[key] = folder
    return _saved[key]
