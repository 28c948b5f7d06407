"""Everything a run resolves before training: device facts, data and validation split, the checkpoint
folder (and what to resume), the log folder, and the model (fresh, fine-tuned, resumed, LoRA-wrapped).

Each function takes the resolved :class:`~theta_ai.config.ThetaConfig` and appends anything it changed
or noticed to ``notes`` (printed as warning lines by the CLI).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from theta_ai.config import ConfigError, ThetaConfig
from theta_ai.config.launch import is_main_process, world_size  # noqa: F401 (re-exported)
from theta_ai.data.formats import Example
from theta_ai.training.inputs import RunInputs, kbit_request, load_run_data, read_run_inputs, split_validation  # noqa: F401 (their old home)
from theta_ai.model.load import (
    THETA_TINY,
    LoadedModel,
    load_model_and_tokenizer,
    load_tokenizer,
    training_texts,
)
from theta_ai.model.gguf import find_gguf
from theta_ai.model.quantize import describe_kbit, kbit_bits, prepare_kbit
from theta_ai.model.lora import (
    adapter_base,
    base_reference,
    describe_lora,
    differing_lora_flags,
    is_adapter_folder,
    load_adapter,
    save_base_model,
    wrap_with_lora,
)
from theta_ai.training import checkpoints as ckpt
from theta_ai.training.precision import choose_cpu_precision


def describe_device() -> str:

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    return f"cpu ({os.cpu_count()} cores)"


# ---------------------------------------------------------------------------- data: theta_ai.training.inputs


def examples_to_jsonl(examples: list[Example]) -> str:
    return "".join(json.dumps({"messages": e.messages, "domain": e.domain}, ensure_ascii=False) + "\n"
                   for e in examples)


# ---------------------------------------------------------------------------- checkpoints


def checkpoint_folder(cfg: ThetaConfig, notes: list[str]) -> Path:
    """The folder this run writes to: ``--checkpoint-dir``, or a sub-folder of its own for a fine-tuning run."""
    directory = Path(cfg.checkpoint_dir)
    chosen_by_user = cfg.sources["checkpoint_dir"] == "command line" or cfg.sources["checkpoint_dir"].startswith("config")
    if cfg.load_checkpoint and not chosen_by_user:
        source = Path(cfg.load_checkpoint)
        if source.resolve().parent == directory.resolve():
            # The guide's `--load-checkpoint models/theta_checkpoint_epoch_26`: the new run must not mix its
            # epoch checkpoints with the old run's in models/, so it gets a sub-folder of its own.
            directory = directory / f"finetune_from_{source.name}"
            notes.append(f"--load-checkpoint: {source} lies in the checkpoint folder {cfg.checkpoint_dir}/, so this "
                         f"fine-tuning run writes to {directory}/ (pass --checkpoint-dir to choose)")
    return directory


def resume_checkpoint(cfg: ThetaConfig, directory: Path, notes: list[str]) -> Path | None:
    """Tidy up after a crash (names theta_ai wrote only; a dry run only reports) and pick what to resume.

    A fresh run is refused when the folder holds any checkpoint of an earlier run (epoch, mid-epoch,
    best or final), so it can never delete or mix with another run's checkpoints.
    """
    if is_main_process():
        lines = ckpt.recover(directory, dry_run=cfg.dry_run)
        notes += [f"--dry-run: {line}" if cfg.dry_run else line for line in lines]
    resume_from = None
    if cfg.resume == "auto":
        resume_from, damaged = ckpt.resume_point(directory)
        notes += damaged
        if resume_from is None and not damaged:
            notes.append(f"--resume auto: no complete checkpoint in {directory}/, starting a fresh run")
    elif cfg.resume:
        resume_from = Path(cfg.resume)
        problem = ckpt.checkpoint_problem(resume_from) if resume_from.is_dir() else "no such folder"
        if problem:
            raise ConfigError(f"--resume {cfg.resume}: not a complete theta-train checkpoint ({problem}); "
                              f"use --resume auto or a theta_checkpoint_epoch_N folder")
    if resume_from is not None and cfg.load_checkpoint:
        notes.append(f"resuming from {resume_from}; --load-checkpoint {cfg.load_checkpoint} only applies to a fresh start")
    elif resume_from is None and cfg.resume is None and ckpt.own_checkpoints(directory):
        found = ckpt.own_checkpoints(directory)
        newest = ckpt.latest_checkpoint(directory) or found[-1] if len(found) else None
        raise ConfigError(f"{directory}/ already holds checkpoints of an earlier run (newest: {newest.name}). "
                          f"Continue it with --resume auto, or write this run elsewhere with --checkpoint-dir")
    return resume_from


def run_log_dir(cfg: ThetaConfig, resume_from: Path | None) -> Path:
    """``logs/<preset>-<start time>``; a resumed run continues in the folder recorded with its checkpoint."""
    if resume_from is not None:
        previous = ckpt.read_run_info(resume_from).get("log_dir")
        if previous and Path(previous).is_dir():
            return Path(previous)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.logdir) / f"{cfg.preset}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


# ---------------------------------------------------------------------------- prepare / train


def cpu_bf16_choice(cfg: ThetaConfig, model, resume_from: Path | None, notes: list[str],
                    loss_path: tuple[bool, bool] = (False, False)) -> bool:
    """``--precision auto`` without CUDA: bf16 autocast where the start-up probe shows it faster (training/precision),
    timing the step with the run's own loss path (``loss_path``: (chunked, answer_head), training/loss).

    A resumed run keeps its checkpoint's precision; a multi-process CPU run stays fp32 (each process would time
    its own probe and could choose differently).
    """
    if cfg.precision != "auto" or torch.cuda.is_available() or world_size() > 1:
        return False
    recorded = ckpt.read_run_info(resume_from).get("precision") if resume_from is not None else None
    bf16, line = choose_cpu_precision(model, recorded, loss_path)
    if line:
        notes.append(line)
    return bf16



def load_run_model(cfg: ThetaConfig, train_examples: list[Example], checkpoint_dir: Path,
                   resume_from: Path | None, notes: list[str]) -> LoadedModel:
    """The model to train: fresh, from ``--load-checkpoint``, or from the checkpoint to resume; LoRA-wrapped with ``--lora``.

    A resumed run rebuilds the model from the checkpoint's files (for LoRA: the base the adapter names, with
    the adapter configuration saved next to it -- r, alpha, dropout and target modules -- whatever the
    ``--lora-*`` flags say), and Trainer then restores the checkpoint's weights and optimizer into it.
    ``--load-checkpoint ADAPTER --lora`` likewise keeps training the saved adapter as it was configured.
    A dry run wraps the model (to report its trainable parameters) but writes no ``theta_base/``.
    """

    bits = kbit_bits(cfg)

    def load(source: str, adapter: str = "merge") -> LoadedModel:
        texts = training_texts(train_examples) if source == THETA_TINY else None
        # Trained weights are fp32 (Trainer's fp16/bf16 is autocast over fp32 master weights): transformers 5 would
        # otherwise load a bf16 checkpoint as bf16, and AdamW's small updates would round away. A k-bit base is
        # quantised instead, its other weights upcast by peft.
        loaded = load_model_and_tokenizer(source, train_texts=texts, seed=cfg.seed,
                                          trust_remote_code=cfg.trust_remote_code, adapter=adapter,
                                          quantization=bits, dtype=None if bits else "float32")
        notes.extend(loaded.notes)
        if bits is not None:  # QLoRA: a frozen k-bit base, prepared by peft before the adapters are added
            loaded.model = prepare_kbit(loaded.model, cfg.gradient_checkpointing)
            notes.append(describe_kbit(bits))
        return loaded

    targets = [t.strip() for t in cfg.lora_target_modules.split(",")] if cfg.lora_target_modules else None
    source = str(resume_from) if resume_from else cfg.load_checkpoint or cfg.model_name
    saved_adapter = None
    if resume_from is not None and is_adapter_folder(resume_from):
        saved_adapter = resume_from
    elif cfg.load_checkpoint and is_adapter_folder(cfg.load_checkpoint) and cfg.lora:
        saved_adapter = Path(cfg.load_checkpoint)  # keep training the same adapter
    if saved_adapter is not None:
        base = adapter_base(saved_adapter)
        loaded = load(base)
        if saved_adapter != resume_from:
            loaded.tokenizer = load_tokenizer(str(saved_adapter), cfg.trust_remote_code)
        loaded.model = load_adapter(saved_adapter, loaded.model, trainable=True)
        config = loaded.model.peft_config["default"]
        config.base_model_name_or_path = base_reference(base, checkpoint_dir)  # as seen from this run's checkpoints
        ignored = differing_lora_flags(config, cfg)
        if ignored and saved_adapter == resume_from:
            notes.append(f"--resume: the checkpoint's LoRA adapter was trained with {describe_lora(config)}; "
                         f"it resumes with those (ignored: {', '.join(ignored)})")
        elif ignored:
            notes.append(f"--load-checkpoint: the LoRA adapter in {saved_adapter} was trained with "
                         f"{describe_lora(config)}; training continues with those (ignored: {', '.join(ignored)})")
    else:
        loaded = load(source)
        if cfg.load_checkpoint and is_adapter_folder(cfg.load_checkpoint):
            notes.append(f"--load-checkpoint {cfg.load_checkpoint} is a LoRA adapter: it was merged into its base "
                         "model and all weights train (add --lora to keep training the adapter instead)")
        if cfg.lora:
            base = source
            if source == THETA_TINY or find_gguf(source) is not None:  # adapters need a safetensors base to name
                base = (checkpoint_dir / ckpt.BASE_DIR).resolve()
                if not cfg.dry_run:  # a dry run writes nothing
                    base = save_base_model(loaded.model, loaded.tokenizer, checkpoint_dir).resolve()
            loaded.model = wrap_with_lora(loaded.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, targets,
                                          base_reference(base, checkpoint_dir), use_dora=cfg.lora_dora,
                                          use_rslora=cfg.lora_rslora)
    if source != cfg.model_name:
        loaded.source = f"{cfg.model_name if cfg.sources['model_name'] != 'default' else 'model'} from {source}"
    if cfg.lora or saved_adapter is not None:
        loaded.source += f" + LoRA r={loaded.model.peft_config['default'].r}"  # the banner adds how many train
    return loaded
