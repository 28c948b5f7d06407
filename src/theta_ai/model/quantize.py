"""QLoRA: the frozen base model's linear layers in 4-bit NF4 or 8-bit, through bitsandbytes (the ``qlora`` extra).

``theta-train --lora --load-in-4bit`` loads the base with transformers' ``BitsAndBytesConfig`` (NF4, double
quantisation, compute dtype bf16 where the card supports it, else fp16), prepares it with peft's
``prepare_model_for_kbit_training`` (frozen base, norms and embeddings upcast to fp32, inputs that require
grad for checkpointing) and trains LoRA adapters on it (Dettmers et al. 2023, "QLoRA")::

    pip install "theta_ai[qlora]"
    theta-train --model-name Qwen/Qwen2.5-1.5B-Instruct --data data/ --lora --load-in-4bit

The adapters are saved as usual; ``--merge-lora`` and theta-eval load the base *unquantised* and merge into it,
as peft recommends (merging into 4-bit weights would round the update away). bitsandbytes' k-bit kernels need
a CUDA GPU, so without one (or without the package) :func:`check_kbit_support` raises a one-line error.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

from theta_ai.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

KBIT_FLAGS = {4: "--load-in-4bit", 8: "--load-in-8bit"}
INSTALL = 'pip install "theta_ai[qlora]"'


def kbit_bits(cfg: Any) -> int | None:
    """4, 8 or None from ``cfg.load_in_4bit`` / ``cfg.load_in_8bit``; both at once is an error."""
    four, eight = bool(getattr(cfg, "load_in_4bit", False)), bool(getattr(cfg, "load_in_8bit", False))
    if four and eight:
        raise ConfigError("--load-in-4bit and --load-in-8bit exclude each other: choose one")
    return 4 if four else 8 if eight else None


def check_kbit_request(bits: int | None, *, lora: bool, model_name: str, gguf: bool) -> None:
    """What a k-bit run needs from its other options (no hardware check: see :func:`check_kbit_support`)."""
    if bits is None:
        return
    flag = KBIT_FLAGS[bits]
    if not lora:
        raise ConfigError(f"{flag} trains LoRA adapters on a frozen {bits}-bit base (QLoRA); quantised weights "
                          f"cannot be fine-tuned themselves: add --lora")
    if model_name == "theta-tiny":
        raise ConfigError(f"{flag}: theta-tiny is built in fp32 for the quick start; quantise a pretrained model "
                          f"folder or hub id instead (e.g. --model-name Qwen/Qwen2.5-1.5B-Instruct)")
    if gguf:
        raise ConfigError(f"{flag}: a .gguf file loads dequantized and cannot be re-quantised by bitsandbytes; "
                          f"start from the model's safetensors folder, or drop {flag}")


def check_kbit_support(bits: int, *, cuda: bool | None = None, package: bool | None = None) -> None:
    """Raise a one-line :class:`ConfigError` when this machine cannot load ``bits``-bit weights.

    ``cuda`` / ``package`` default to what this machine has (a CUDA device; bitsandbytes importable).
    """
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if package is None:
        package = importlib.util.find_spec("bitsandbytes") is not None
    flag = KBIT_FLAGS[bits]
    if not cuda:
        raise ConfigError(f"{flag} needs a CUDA GPU (bitsandbytes' {bits}-bit kernels); this machine has none: "
                          f"drop {flag} to train LoRA on the full-precision model")
    if not package:
        raise ConfigError(f"{flag} needs bitsandbytes, which is not installed: {INSTALL}")


def kbit_compute_dtype() -> "torch.dtype":
    """bf16 where the card supports it (Ampere and newer, the RTX 3060 included), else fp16."""
    import torch

    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


def kbit_load_kwargs(bits: int) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments that load the linear layers in ``bits`` bits on this process's GPU."""
    from transformers import BitsAndBytesConfig

    compute = kbit_compute_dtype()
    if bits == 4:
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
    else:
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    # bitsandbytes weights live where they are quantised: on this process's own GPU (one per torchrun rank)
    device = int(os.environ.get("LOCAL_RANK", 0))
    return {"quantization_config": quantization, "device_map": {"": device}, "dtype": compute}


def describe_kbit(bits: int) -> str:
    """The banner's line for a k-bit base."""
    if bits == 4:
        return f"base loaded in 4-bit NF4 with double quantisation, compute in {str(kbit_compute_dtype())[6:]} (QLoRA)"
    return "base loaded in 8-bit (LLM.int8), adapters trained on it"


def prepare_kbit(model, gradient_checkpointing: bool):
    """peft's k-bit preparation, keeping theta-train's own ``--gradient-checkpointing`` choice.

    peft turns gradient checkpointing on by default here; theta-train leaves that to the flag (and to
    ``--plan``, which says when a k-bit run needs it), so the run does what the banner says.
    """
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
