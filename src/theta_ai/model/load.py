"""Load a causal LM and its tokenizer: a hub id, a local folder, or the embedded ``theta-tiny``.

``theta-tiny`` needs no network: a small Llama-architecture config shipped in the package
(``resources/theta_tiny_config.json``, which names its architecture by ``model_type``) and a byte-level
BPE tokenizer trained on the training texts with the ``tokenizers`` library (about a second for the
bundled data). Both are saved with ``save_pretrained`` in every checkpoint, so plain
``AutoModelForCausalLM.from_pretrained`` loads them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from theta_ai.errors import ModelLoadError  # noqa: F401 (defined in errors.py)
from theta_ai.model.gguf import find_gguf, load_gguf, load_gguf_tokenizer
from theta_ai.model.lora import adapter_base, is_adapter_folder, load_adapter
from theta_ai.model.tokens import keep_generation_eos

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger("theta_ai")

THETA_TINY = "theta-tiny"
EOS_TOKEN = "<|endoftext|>"


@dataclass
class LoadedModel:
    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    source: str
    notes: list[str] = field(default_factory=list)  # one line per change theta_ai made while loading


def theta_tiny_config() -> dict:
    """The shipped theta-tiny config (``model_type`` and its config keys, plus ``vocab_size_target``)."""
    text = resources.files("theta_ai").joinpath("resources/theta_tiny_config.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def theta_tiny_model_config(vocab_size: int, **ids: int):
    """The transformers config of theta-tiny for a tokenizer of ``vocab_size`` tokens (``ids``: bos/eos/pad ids)."""
    values = theta_tiny_config()
    values.pop("vocab_size_target")
    values.pop("architectures", None)
    return AutoConfig.for_model(values.pop("model_type"), vocab_size=vocab_size, **ids, **values)


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> "PreTrainedTokenizerBase":
    """Train a byte-level BPE tokenizer on ``texts`` (deterministic for the same texts in the same order)."""

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=2,
                            special_tokens=[EOS_TOKEN], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS_TOKEN,
                                        bos_token=EOS_TOKEN, unk_token=EOS_TOKEN, pad_token=EOS_TOKEN)
    tokenizer.model_max_length = theta_tiny_config()["max_position_embeddings"]
    return tokenizer


def build_theta_tiny(texts: Iterable[str], seed: int = 42) -> LoadedModel:
    """A freshly initialised theta-tiny model with a tokenizer trained on ``texts``."""

    tokenizer = train_tiny_tokenizer(texts, theta_tiny_config()["vocab_size_target"])
    eos = tokenizer.eos_token_id
    config = theta_tiny_model_config(len(tokenizer), bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    _align_special_tokens(model, tokenizer)
    return LoadedModel(model, tokenizer, THETA_TINY)


def _align_special_tokens(model, tokenizer) -> None:
    """Pad and stop ids the model's generation agrees with.

    GPT-2-style tokenizers have no pad token: pad with EOS (labels are masked by position, so EOS still
    trains). The model's own ``generation_config.eos_token_id`` list is kept (Llama-3-Instruct has three ids);
    the trained end ids it lacks (the template's turn end, the tokenizer's EOS) are added
    (:func:`theta_ai.model.tokens.keep_generation_eos`), so every checkpoint stops where it was trained to.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        keep_generation_eos(model, tokenizer)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> "PreTrainedTokenizerBase":

    gguf_file = find_gguf(name_or_path)  # a .gguf file, or a folder holding one (model/gguf.py)
    try:
        tokenizer = (load_gguf_tokenizer(gguf_file) if gguf_file is not None else
                     AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code))
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(_explain(name_or_path, "tokenizer", exc)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _explain(name: str, what: str, exc: Exception) -> str:
    path = Path(name)
    if path.exists() and path.is_dir():
        return (f"{name} holds no loadable {what} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "point --model-name/--model-path at a folder written by save_pretrained or by theta-train")
    if path.exists():
        return f"{name} is a file, not a model folder; point at the folder that holds config.json, or at a .gguf file"
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        return f"{name} does not exist; check the path"
    return (f"could not load {what} {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            f"If it is a hub id, this machine may be offline: download it elsewhere and pass its local folder, "
            f"or use --model-name {THETA_TINY}")


#: float module attributes that hold a dropout probability (attention that calls scaled_dot_product_attention)
_FLOAT_DROPOUT_ATTRS = ("attention_dropout", "attn_dropout", "dropout")


def set_dropout(model, p: float) -> list[str]:
    """Override every dropout probability in the config and modules; returns the config keys changed."""

    changed = []
    for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "hidden_dropout", "attention_dropout",
                "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout"):
        if hasattr(model.config, key):
            setattr(model.config, key, p)
            changed.append(key)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        # attention layers that hand their probability to scaled_dot_product_attention keep it as a float copied
        # from the config at construction (Llama, Qwen, Gemma, Mistral: ``self.attention_dropout``)
        for attr in _FLOAT_DROPOUT_ATTRS:
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, p)
    return changed


def load_model_and_tokenizer(model_name: str, *, train_texts: Iterable[str] | None = None, seed: int = 42,
                             trust_remote_code: bool = False, dtype: str | None = None,
                             adapter: str = "merge", quantization: int | None = None) -> LoadedModel:
    """Load ``model_name`` (hub id, local folder, LoRA adapter folder, GGUF file, or ``theta-tiny``) with a tokenizer that can pad.

    ``train_texts`` is needed only for ``theta-tiny`` (its tokenizer is trained on them). An adapter folder
    is loaded onto the base model its config names (a relative path counts from the adapter folder): merged
    into it (``adapter="merge"``, for evaluation and export) or as a trainable ``PeftModel``
    (``adapter="trainable"``, to train the adapter further). ``quantization`` 4 or 8 loads a model folder's
    linear layers in that many bits through bitsandbytes (:mod:`theta_ai.model.quantize`; CUDA only).
    """

    if is_adapter_folder(model_name):
        try:
            base_path = adapter_base(model_name)  # resolved against the adapter folder; says itself what is missing
        except ValueError as exc:
            raise ModelLoadError(f"{model_name} is a LoRA adapter whose base model cannot be loaded: {exc}") from None
        try:
            base = load_model_and_tokenizer(base_path, trust_remote_code=trust_remote_code, dtype=dtype)
        except (ValueError, ModelLoadError) as exc:
            raise ModelLoadError(f"{model_name} is a LoRA adapter whose base model cannot be loaded: {exc}") from None
        tokenizer = load_tokenizer(model_name, trust_remote_code)
        peft_model = load_adapter(model_name, base.model, trainable=adapter == "trainable")
        model = peft_model.merge_and_unload() if adapter == "merge" else peft_model
        return LoadedModel(model, tokenizer, model_name)
    if model_name == THETA_TINY:
        if train_texts is None:
            raise ModelLoadError("theta-tiny trains its tokenizer on the training data; pass train_texts")
        return build_theta_tiny(train_texts, seed)
    gguf_file = find_gguf(model_name)
    if gguf_file is not None:  # dequantized into a plain model (model/gguf.py)
        model, tokenizer, source = load_gguf(gguf_file, model_name, dtype=dtype)
        _align_special_tokens(model, tokenizer)
        return LoadedModel(model, tokenizer, source)

    tokenizer = load_tokenizer(model_name, trust_remote_code)
    kwargs = {"dtype": dtype} if dtype else {}
    notes = []
    if dtype in ("float32", torch.float32) and not quantization:
        stored = _stored_dtype(model_name, trust_remote_code)
        if stored in ("float16", "bfloat16"):
            notes.append(f"{model_name} is stored in {stored}: loaded in float32 for training (fp32 master weights; "
                         f"--precision fp16/bf16 is autocast over them, so small updates are not rounded away)")
    if quantization:
        from theta_ai.model.quantize import kbit_load_kwargs

        kwargs.update(kbit_load_kwargs(quantization))
    try:
        model = AutoModelForCausalLM.from_pretrained(model_name, trust_remote_code=trust_remote_code, **kwargs)
    except Exception as exc:
        raise ModelLoadError(_explain(model_name, "causal language model", exc)) from None
    _align_special_tokens(model, tokenizer)
    return LoadedModel(model, tokenizer, model_name, notes)


def _stored_dtype(model_name: str, trust_remote_code: bool) -> str | None:
    """The dtype a model folder's (or cached hub model's) config.json says its weights are stored in."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_name, trust_remote_code=trust_remote_code)
    except Exception:  # the model load that follows reports what is wrong
        return None
    stored = getattr(config, "dtype", None)
    return str(stored).removeprefix("torch.") if stored is not None else None


def training_texts(examples) -> list[str]:
    """The texts the theta-tiny tokenizer is trained on: every message, plus the template words."""
    texts = ["Question: \nAnswer: "]
    for example in examples:
        texts.extend(m["content"] for m in example.messages)
    return texts
