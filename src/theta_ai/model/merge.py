"""``theta-train --merge-lora``: base model + LoRA adapter written as one plain transformers model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from theta_ai.model.folders import RUN_INFO, STAGING_SUFFIX, VALIDATION_FILE, publish
from theta_ai.model.load import load_model_and_tokenizer
from theta_ai.model.lora import ADAPTER_CONFIG, is_adapter_folder


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Write base + adapter as one plain transformers model folder (``from_pretrained`` loads it)."""
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
