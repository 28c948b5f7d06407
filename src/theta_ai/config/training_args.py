"""``transformers.TrainingArguments`` from a resolved :class:`~theta_ai.config.ThetaConfig`.

theta_ai's choices that are not simply copied from an option are commented where they are made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from theta_ai.config.launch import world_size
from theta_ai.config.resolve import LOSS_METRICS, ThetaConfig, metric_key
from theta_ai.errors import ConfigError


def resolve_precision(cfg: ThetaConfig, notes: list[str], cpu_bf16: bool = False) -> tuple[bool, bool]:
    """(fp16, bf16) for this machine; says so when it cannot honour the request.

    ``cpu_bf16``: ``--precision auto`` on a CPU takes bf16 autocast (the start-up probe of
    :mod:`theta_ai.training.precision` found it faster and said so).
    """
    cuda = torch.cuda.is_available()
    want = cfg.precision
    if want == "auto" and not cuda and cpu_bf16:
        return False, True
    if want in ("auto", "fp16"):
        if cuda:
            return True, False
        notes.append(f"precision {want}: fp16 mixed precision needs a CUDA GPU; this run uses fp32 on the CPU")
        return False, False
    if want == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise ConfigError("--precision bf16: this GPU does not support bf16; use --precision fp16")
        return False, True
    return False, False


SCHEDULER_TYPES = {"linear": "linear", "cosine": "cosine", "cosine-restarts": "cosine_with_restarts",
                   "plateau": "reduce_lr_on_plateau", "constant": "constant_with_warmup"}


def scheduler_arguments(cfg: ThetaConfig, notes: list[str]) -> dict[str, Any]:
    """TrainingArguments fields for ``--lr-scheduler`` and warmup: transformers' own schedulers."""
    kwargs: dict[str, Any] = {"lr_scheduler_type": SCHEDULER_TYPES[cfg.lr_scheduler],
                              "warmup_steps": cfg.warmup_ratio if cfg.warmup_ratio is not None else cfg.warmup_steps}
    if cfg.lr_scheduler == "cosine-restarts":
        kwargs["lr_scheduler_kwargs"] = {"num_cycles": cfg.lr_cycles}
    elif cfg.lr_scheduler == "plateau":
        kwargs["lr_scheduler_kwargs"] = {"factor": cfg.lr_factor, "patience": cfg.lr_patience}
        if kwargs["warmup_steps"]:
            notes.append("--lr-scheduler plateau has no warmup (torch's ReduceLROnPlateau); warmup is ignored")
    return kwargs


def build_training_arguments(cfg: ThetaConfig, checkpoint_dir: Path, notes: list[str], cpu_bf16: bool = False):
    """TrainingArguments of the run (``cpu_bf16``: see :func:`resolve_precision`)."""
    fp16, bf16 = resolve_precision(cfg, notes, cpu_bf16)
    metric = metric_key(cfg.metric_for_best)
    kwargs = dict(
        output_dir=str(checkpoint_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        label_smoothing_factor=cfg.label_smoothing,
        neftune_noise_alpha=cfg.neftune_alpha,
        logging_nan_inf_filter=not cfg.spike_guard,  # the spike guard must see a NaN loss, not a filtered one
        seed=cfg.seed,
        data_seed=cfg.seed,
        fp16=fp16,
        bf16=bf16,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        torch_compile=cfg.torch_compile,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        metric_for_best_model=metric,
        greater_is_better=metric not in LOSS_METRICS,
        save_total_limit=None,  # ThetaTrainer rotates theta_checkpoint_epoch_N itself
        # Trainer's own W&B / MLflow callbacks; TensorBoard's callback is added explicitly, with theta_ai's run folder
        report_to=[t for t in cfg.report_to.split(",") if t in ("wandb", "mlflow")] or "none",
        remove_unused_columns=False,  # the collator picks its columns; "length" feeds the sampler
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        length_column_name="length",
        # Real tokens are counted by the collator on the CPU (ThetaTrainer.log sums them); Trainer's own count
        # ("non_padding") would gather and .item() every micro-batch, a host sync per step on a GPU.
        include_num_input_tokens_seen="no",
        dataloader_num_workers=dataloader_workers(cfg),
        # a worker pool started once holds the dataset as it was then: new workers every epoch see set_epoch
        dataloader_persistent_workers=False,
        dataloader_pin_memory=_cuda(),  # pinning only helps (and only works) with a GPU
        # Without CUDA, accelerate sets up multi-process (gloo) training only when told it is a CPU run;
        # otherwise each torchrun/accelerate worker trains alone on all the data and saves as if rank 0.
        # Trainer also refuses bf16 without a GPU unless told it is a CPU run (CPU bf16 autocast).
        use_cpu=(world_size() > 1 or bf16) and not _cuda(),
    )
    kwargs.update(scheduler_arguments(cfg, notes))
    kwargs.update(cfg.training_args)
    args = TrainingArguments(**kwargs)
    # With neither fp16 nor bf16, Trainer takes its precision from ACCELERATE_MIXED_PRECISION (an accelerate
    # config's mixed_precision); theta-train's --precision, shown in the banner, must win.
    args.mixed_precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "no"
    return args


def dataloader_workers(cfg: ThetaConfig) -> int:
    """``--dataloader-workers``, or the default: with ``--augment`` each item is augmented and tokenized when it is
    fetched, so 1 worker (2 on 6+ cores) does that beside the training step; without it rows are ready-made ids
    and a worker process would only add start-up time."""
    if cfg.dataloader_workers is not None:
        return cfg.dataloader_workers
    if not cfg.augment:
        return 0
    return 2 if (os.cpu_count() or 1) >= 6 else 1


def _cuda() -> bool:

    return torch.cuda.is_available()
