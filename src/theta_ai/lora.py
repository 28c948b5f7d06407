"""LoRA through peft: wrap a model, load an adapter folder, merge an adapter into a full model.

With ``--lora`` only the adapter trains; Trainer then saves the adapter (``adapter_model.safetensors``
+ ``adapter_config.json``) in every checkpoint, and resuming restores it. The adapter config names the
base model it belongs to; for ``theta-tiny`` (which has no hub id or folder of its own) theta-train
first saves the base model to ``<checkpoint-dir>/theta_base/`` and points the adapter there.

    theta-train --data data/ --model-name gpt2 --lora --lora-r 16
    theta-eval --model-path models/theta_best                      # evaluates base + adapter
    theta-train --merge-lora models/theta_best --output models/merged   # a plain transformers model
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel

logger = logging.getLogger("theta_ai")

ADAPTER_CONFIG = "adapter_config.json"
BASE_DIR = "theta_base"

# Default target modules per architecture: every attention and MLP projection.
DEFAULT_TARGETS = {
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
}


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def default_target_modules(model) -> list[str] | str:
    """The architecture's attention and MLP projections, or peft's ``all-linear`` for unknown ones."""
    targets = DEFAULT_TARGETS.get(getattr(model.config, "model_type", ""))
    return list(targets) if targets else "all-linear"


def wrap_with_lora(model: "PreTrainedModel", r: int = 8, alpha: int = 16, dropout: float = 0.05,
                   target_modules: list[str] | str | None = None, base_path: str | None = None):
    """A ``peft.PeftModel`` whose only trainable parameters are the LoRA adapters."""
    from peft import LoraConfig, get_peft_model

    targets = target_modules or default_target_modules(model)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM",
                        fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2")  # GPT-2 uses Conv1D
    peft_model = get_peft_model(model, config)
    if base_path:
        peft_model.peft_config["default"].base_model_name_or_path = base_path
    return peft_model


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder belongs to (``base_model_name_or_path`` of its config)."""
    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path}/{ADAPTER_CONFIG} does not name its base model (base_model_name_or_path)")
    return base


def load_adapter(path: str | Path, base_model: "PreTrainedModel", trainable: bool = False):
    """Attach the adapter in ``path`` to ``base_model``; trainable for further LoRA training."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(path), is_trainable=trainable)


def save_base_model(model: "PreTrainedModel", tokenizer, checkpoint_dir: Path) -> Path:
    """Save a base model that no hub id or folder names (theta-tiny) next to the run, once."""
    from .checkpoints import STAGING_SUFFIX, publish

    final = checkpoint_dir / BASE_DIR
    if final.is_dir():
        return final
    staging = final.with_name(final.name + STAGING_SUFFIX)
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return publish(staging, final)


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Write base + adapter as one plain transformers model folder (``from_pretrained`` loads it)."""
    from .checkpoints import RUN_INFO, STAGING_SUFFIX, VALIDATION_FILE, publish
    from .modeling import load_model_and_tokenizer

    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if not is_adapter_folder(adapter_dir):
        raise ValueError(f"--merge-lora {adapter_dir}: no {ADAPTER_CONFIG} there; point at a LoRA checkpoint folder")
    loaded = load_model_and_tokenizer(str(adapter_dir))  # merged on load
    staging = output_dir.with_name(output_dir.name + STAGING_SUFFIX)
    if staging.exists():
        shutil.rmtree(staging)
    loaded.model.save_pretrained(staging)
    loaded.tokenizer.save_pretrained(staging)
    for name in (RUN_INFO, VALIDATION_FILE):
        if (adapter_dir / name).is_file():
            shutil.copy2(adapter_dir / name, staging / name)
    return publish(staging, output_dir)
