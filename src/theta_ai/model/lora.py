"""LoRA through peft: wrap a model, load an adapter folder, merge an adapter into a full model.

With ``--lora`` only the adapter trains; Trainer then saves the adapter (``adapter_model.safetensors``
+ ``adapter_config.json``) in every checkpoint, and resuming restores it. The adapter config names the
base model it belongs to; for ``theta-tiny`` (which has no hub id or folder of its own) theta-train
first saves the base model to ``<checkpoint-dir>/theta_base/`` and points the adapter there with a path
relative to the adapter folder (``../theta_base``), so the checkpoint folder can be moved or copied whole.
A resumed or continued adapter keeps the configuration it was trained with (r, alpha, dropout, targets).

    theta-train --data data/ --model-name gpt2 --lora --lora-r 16
    theta-eval --model-path models/theta_best                      # evaluates base + adapter
    theta-train --merge-lora models/theta_best --output models/merged   # a plain transformers model
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from theta_ai.errors import ModelLoadError
from theta_ai.model.folders import BASE_DIR, STAGING_SUFFIX, publish

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel

logger = logging.getLogger("theta_ai")

ADAPTER_CONFIG = "adapter_config.json"

def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def _short_target_names(model, targets) -> list[str] | None:
    """The wrapped modules' own names (``c_attn``) when they select exactly the ``targets`` (full module names).

    peft resolves ``all-linear`` to full per-layer names (``transformer.h.0.attn.c_attn``) and shortens them only
    for 20 targets or more, so a small model's adapter config would list every layer; the short names keep it
    readable, and ``--lora-target-modules c_attn,c_proj,c_fc`` then compares equal to it on resume.
    """
    short = {name.rsplit(".", 1)[-1] for name in targets}
    selected = {name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in short}
    return sorted(short) if selected == set(targets) else None


def _ignore_relative_base_lookup() -> None:
    """peft's save_pretrained looks the base up relative to the working directory (or on the hub) to decide whether
    to save the embedding layers; for ``../theta_base`` that lookup cannot succeed and warns at every checkpoint,
    with the same outcome as finding the base with an unchanged vocabulary (theta never resizes it)."""
    warnings.filterwarnings("ignore", message=r"Could not find a config file in \.\.?[/\\]", category=UserWarning)


def wrap_with_lora(model: "PreTrainedModel", r: int = 8, alpha: int = 16, dropout: float = 0.05,
                   target_modules: list[str] | str | None = None, base_path: str | None = None, *,
                   use_dora: bool = False, use_rslora: bool = False):
    """A ``peft.PeftModel`` whose only trainable parameters are the LoRA adapters (DoRA: also the magnitudes)."""
    from peft import LoraConfig, get_peft_model

    # peft's all-linear: every Linear and Conv1D but the output head -- for GPT-2 c_attn, c_proj, c_fc; for Llama
    # (Mistral, Qwen2) q/k/v/o_proj and gate/up/down_proj
    targets = target_modules or "all-linear"
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM",
                        fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",  # GPT-2 uses Conv1D
                        use_dora=use_dora, use_rslora=use_rslora)
    peft_model = get_peft_model(model, config)
    resolved = peft_model.peft_config["default"]
    if targets == "all-linear" and not isinstance(resolved.target_modules, str):
        short = _short_target_names(peft_model.base_model.model, resolved.target_modules)
        if short:
            resolved.target_modules = set(short)
    if base_path:
        peft_model.peft_config["default"].base_model_name_or_path = base_path
    _ignore_relative_base_lookup()
    return peft_model


def base_reference(base: str | Path, checkpoint_dir: str | Path) -> str:
    """What the adapters saved in ``checkpoint_dir/<folder>/`` store as ``base_model_name_or_path``.

    A ``theta_base`` folder theta-train saved in the checkpoint folder (or in one above it, for a
    ``finetune_from_*`` sub-folder) is stored relative to the adapter folder (``../theta_base``), so the
    whole folder can move; any other local folder is stored as its absolute path, and a hub id as given.
    """
    path = Path(base)
    if not (path.is_absolute() or path.exists()):
        return str(base)  # a hub id
    resolved, run_dir = path.resolve(), Path(checkpoint_dir).resolve()
    if resolved.name == BASE_DIR and (resolved.parent == run_dir or resolved.parent in run_dir.parents):
        return Path(os.path.relpath(resolved, run_dir / "adapter")).as_posix()
    return str(resolved)


def _is_relative_reference(base: str) -> bool:
    return base in (".", "..") or base.startswith(("./", "../", ".\\", "..\\"))


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder belongs to (``base_model_name_or_path`` of its config), ready to load.

    A relative reference (``../theta_base``) is resolved against the adapter folder. An absolute path that no
    longer exists (checkpoints of older versions, after ``models/`` moved) falls back to a ``theta_base``
    folder next to the adapter folder; when neither exists a :class:`ModelLoadError` says how to fix it.
    A hub id is returned as given.
    """
    folder = Path(path)
    config_file = folder / ADAPTER_CONFIG
    config = json.loads(config_file.read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config_file} does not name its base model (base_model_name_or_path)")
    relative = _is_relative_reference(base)
    if not (relative or Path(base).is_absolute()):
        return base
    candidate = folder / base if relative else Path(base)
    if candidate.is_dir():
        return str(candidate.resolve())
    shown = f"{base} ({candidate.resolve()})" if relative else base
    sibling = folder.parent / BASE_DIR
    if Path(base).name == BASE_DIR:
        if sibling.is_dir():
            logger.warning("%s: its base model %s does not exist; using %s next to it instead", folder, shown, sibling)
            return str(sibling.resolve())
        raise ModelLoadError(f"{folder} is a LoRA adapter whose base model {shown} does not exist (nor a {BASE_DIR} "
                             f"folder next to {folder}); copy the base model to {sibling}, or set "
                             f"base_model_name_or_path in {config_file} to the base model's folder or hub id")
    raise ModelLoadError(f"{folder} is a LoRA adapter whose base model {shown} does not exist; restore that folder, "
                         f"or set base_model_name_or_path in {config_file} to the base model's folder or hub id")


def describe_lora(config) -> str:
    """``r=8, alpha=16, dropout=0.05, target modules c_attn,c_fc,c_proj`` for a peft ``LoraConfig``."""
    targets = config.target_modules
    shown = targets if isinstance(targets, str) else ",".join(sorted(targets))
    kinds = "".join(f", {name}" for name, on in (("DoRA", getattr(config, "use_dora", False)),
                                                  ("rsLoRA", getattr(config, "use_rslora", False))) if on)
    return f"r={config.r}, alpha={config.lora_alpha}, dropout={config.lora_dropout:g}{kinds}, target modules {shown}"


def differing_lora_flags(config, cfg) -> list[str]:
    """The ``--lora-*`` settings of ``cfg`` (a ThetaConfig) that differ from a saved adapter's ``config``.

    Settings left at their defaults are not listed: the user did not ask for them.
    """
    flags = []

    def given(key: str) -> bool:
        return cfg.sources.get(key, "default") != "default"

    if given("lora_r") and cfg.lora_r != config.r:
        flags.append(f"--lora-r {cfg.lora_r}")
    if given("lora_alpha") and cfg.lora_alpha != config.lora_alpha:
        flags.append(f"--lora-alpha {cfg.lora_alpha}")
    if given("lora_dropout") and not math.isclose(cfg.lora_dropout, config.lora_dropout):
        flags.append(f"--lora-dropout {cfg.lora_dropout:g}")
    for key, attribute, flag in (("lora_dora", "use_dora", "--lora-dora"), ("lora_rslora", "use_rslora", "--lora-rslora")):
        if given(key) and bool(getattr(cfg, key)) != bool(getattr(config, attribute, False)):
            flags.append(flag if getattr(cfg, key) else flag.replace("--", "--no-", 1))
    if given("lora_target_modules") and cfg.lora_target_modules:
        wanted = {t.strip() for t in cfg.lora_target_modules.split(",") if t.strip()}
        saved = config.target_modules
        if (cfg.lora_target_modules != saved) if isinstance(saved, str) else (wanted != set(saved)):
            flags.append(f"--lora-target-modules {cfg.lora_target_modules}")
    return flags


def load_adapter(path: str | Path, base_model: "PreTrainedModel", trainable: bool = False):
    """Attach the adapter in ``path`` to ``base_model``; trainable for further LoRA training."""
    from peft import PeftModel

    if trainable:  # it will be saved again
        _ignore_relative_base_lookup()
    return PeftModel.from_pretrained(base_model, str(path), is_trainable=trainable)


def save_base_model(model: "PreTrainedModel", tokenizer, checkpoint_dir: Path) -> Path:
    """Save a base model that no hub id or folder names (theta-tiny) next to the run, once."""

    final = checkpoint_dir / BASE_DIR
    if final.is_dir():
        return final
    staging = final.with_name(final.name + STAGING_SUFFIX)
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return publish(staging, final)
