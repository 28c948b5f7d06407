"""Shared pytest fixtures: the committed data files and two small offline tokenizers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Under pytest-xdist every worker would start torch's default of one intra-op thread per core: two workers on the
# 2-core CI machine then run four threads on two cores, and OpenMP threads that wait on each other make small-model
# steps several times slower. One thread per worker (inherited by the CLI subprocesses the tests start); set before
# anything imports torch. An explicit OMP_NUM_THREADS wins.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

DATA_DIR = Path(__file__).parent / "data"

# A ChatML-like template, as Qwen and many instruction-tuned models use.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_SPECIAL_TOKENS = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
CHAT_WORDS = ("user assistant system What is TCP UDP a router Be brief Hi Hello A transport protocol datagram "
              "device that forwards packets Thanks You are welcome ? . ! ,").split()

# Texts the byte-level BPE of the qa tokenizer is trained on (template words included, as theta-tiny does).
QA_TRAINING_TEXTS = [
    "Question: \nAnswer: ",
    "You are a networking tutor.",
    "What is TCP?", "A transport protocol.", "What is UDP?", "A datagram protocol.",
    "What is a router?", "A device that forwards packets.", "Thanks!", "You are welcome.",
    "Qu'est-ce qu'un café ? Une boisson. café café crème crème thé thé",
] * 3


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``tests/data`` (``good/`` and ``bad/`` hold the committed input files)."""
    return DATA_DIR


@pytest.fixture(scope="session")
def qa_tokenizer():
    """theta-tiny's own offline byte-level BPE tokenizer: no chat template, pad == eos == <|endoftext|>."""
    from theta_ai.model.load import train_tiny_tokenizer

    return train_tiny_tokenizer(QA_TRAINING_TEXTS)


def build_chat_tokenizer(chat_template: str | None = CHATML_TEMPLATE, eos_token: str | None = "<|im_end|>"):
    """A word-level tokenizer with ChatML special tokens and a chat template (Llama/Qwen-style setup, offline).

    One token per word or punctuation run, so expected ids can be written down word by word;
    EOS is ``<|im_end|>`` and padding is a separate ``<pad>`` token.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(CHAT_SPECIAL_TOKENS + CHAT_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(CHAT_SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        eos_token=eos_token)
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture(scope="session")
def chat_tokenizer():
    """The ChatML word-level tokenizer of :func:`build_chat_tokenizer` (shared: do not modify it)."""
    return build_chat_tokenizer()


@pytest.fixture
def make_chat_tokenizer():
    """``make_chat_tokenizer(chat_template=..., eos_token=...)``: a fresh word-level tokenizer to modify freely."""
    return build_chat_tokenizer


# The longest files first (measured: pytest's --durations on the 2-core CI machine): pytest-xdist's loadfile hands
# out whole files in collection order, so starting the long ones early keeps one worker from running the wheel or
# the two-process tests alone at the end. Every worker collects the same order (xdist requires it).
LONGEST_FIRST = ("test_families.py", "test_distributed.py", "test_enhanced.py", "test_lora.py", "test_console.py",
                 "test_wheel.py", "test_reliability.py", "test_checkpoint_safety.py", "test_faults.py",
                 "test_cli_eval.py", "test_chat.py", "test_gguf.py", "test_train.py", "test_overnight.py",
                 "test_notebook.py", "test_kbit.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: order within a file kept
