"""``theta-train --merge-lora``: base model + LoRA adapter written as one plain transformers model folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from theta_ai.model.folders import RUN_INFO, STAGING_SUFFIX, VALIDATION_FILE, publish
from theta_ai.model.load import load_model_and_tokenizer
from theta_ai.model.lora import ADAPTER_CONFIG, is_adapter_folder


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path, notes: list[str] | None = None) -> Path:
    """Write base + adapter as one plain transformers model folder (``from_pretrained`` loads it).

    The base is always loaded unquantised: an adapter trained on a 4-bit or 8-bit base (QLoRA) is merged into the
    full-precision weights, as peft recommends (``notes`` gets a line saying so).
    """
    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    if not is_adapter_folder(adapter_dir):
        raise ValueError(f"--merge-lora {adapter_dir}: no {ADAPTER_CONFIG} there; point at a LoRA checkpoint folder")
    bits = _trained_bits(adapter_dir)
    if bits and notes is not None:
        notes.append(f"{adapter_dir} was trained on a {bits}-bit base (QLoRA): merging into the unquantised base "
                     f"model, so the merged weights carry the full-precision base plus the adapter")
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


def _trained_bits(adapter_dir: Path) -> int | None:
    """The k-bit loading recorded in the checkpoint's ``theta_run.json`` (None for a full-precision base)."""
    try:
        return json.loads((adapter_dir / RUN_INFO).read_text(encoding="utf-8")).get("quantization")
    except (OSError, ValueError, AttributeError):
        return None
