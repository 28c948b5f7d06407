"""Shared builders for tests: small datasets and small offline models (no hub, no network)."""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ["router", "switch", "firewall", "compiler", "kernel", "cache", "packet", "socket", "thread", "disk"]
VERBS = ["forwards", "stores", "filters", "translates", "schedules", "moves", "checks", "encrypts"]
DOMAINS = ["networking", "programming", "hardware"]

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qa_records(n: int, seed: int = 0) -> list[dict]:
    """``n`` distinct question/answer records with a learnable pattern."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        topic, verb = TOPICS[i % len(TOPICS)], VERBS[(i // len(TOPICS)) % len(VERBS)]
        records.append({
            "question": f"What does the {topic} number {i} do?",
            "answer": f"The {topic} number {i} {verb} data for the system.",
            "domain": DOMAINS[rng.randrange(len(DOMAINS))],
        })
    return records


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def tiny_train_config(tmp_path: Path, n: int = 48, **overrides) -> dict:
    """CLI-style values for a fast theta-tiny run inside ``tmp_path``."""
    train = write_json(tmp_path / "train.json", qa_records(n))
    val = write_json(tmp_path / "val.json", [
        {"question": f"What is the role of the {t} number {i}?", "answer": f"The {t} number {i} moves data."}
        for i, t in enumerate(TOPICS[:8])])
    values = {
        "data": [str(train)], "val_data": [str(val)], "model_name": "theta-tiny", "epochs": 2.0,
        "batch_size": 8, "grad_accum": 1, "learning_rate": 2e-3, "warmup_steps": 2, "logging_steps": 2,
        "checkpoint_dir": str(tmp_path / "models"), "logdir": str(tmp_path / "logs"), "max_seq_length": 64,
    }
    values.update(overrides)
    return values


def build_tiny_llama(folder: Path, texts: list[str]) -> Path:
    """A Llama-architecture model with a ChatML chat template, saved with save_pretrained."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=600, min_frequency=2,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_tiny_gpt2(folder: Path, texts: list[str]) -> Path:
    """A GPT-2-architecture model (Conv1D projections, learned positions: theta-tiny's layout until it became a
    Llama) with a byte-level BPE tokenizer and no chat template, saved with save_pretrained."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from theta_ai.model.load import train_tiny_tokenizer  # GPT-2-style: <|endoftext|> is EOS, BOS and pad

    tok = train_tiny_tokenizer(texts, vocab_size=600)
    torch.manual_seed(0)
    eos = tok.eos_token_id
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=eos, eos_token_id=eos, pad_token_id=eos))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def weights_sha256(folder: Path) -> str:
    """SHA-256 of a model folder's ``model.safetensors`` tensors (names and bytes), for bit-for-bit comparisons."""
    import hashlib

    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().numpy().tobytes())
    return digest.hexdigest()
