"""The theta-train pipeline as library calls: prepare a run, then train it.

    files -> load_examples -> validation reports -> ExampleFormatter -> collator -> ThetaTrainer

>>> from theta_ai import resolve_config, train
>>> cfg = resolve_config({"epochs": 2}, preset="cpu-quickstart")   # doctest: +SKIP
>>> result = train(cfg)                                              # doctest: +SKIP
>>> result.best_dir                                                  # doctest: +SKIP
PosixPath('models/quickstart/theta_best')
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from accelerate.utils.memory import clear_device_cache

from theta_ai.augment import AugmentConfig, Augmenter
from theta_ai.config import ConfigError, ThetaConfig
from theta_ai.config.training_args import build_training_arguments
from theta_ai.data import (
    ExampleFormatter,
    FormatStats,
    MarkedCollator,
    PaddingCollator,
    check_packing_isolation,
    packing_collator,
)
from theta_ai.data.augmented import AugmentedDataset
from theta_ai.data.mapping import DataReport
from theta_ai.training.dry_run import describe_example, dry_run_report  # noqa: F401 (their old home)
from theta_ai.training.loss import loss_path_choice
from theta_ai.data.formats import Example
from theta_ai.errors import TrainingOOMError  # noqa: F401 (defined in errors.py)
from theta_ai.model.load import LoadedModel, set_dropout
from theta_ai.planner import plan_report
from theta_ai.training import checkpoints as ckpt
from theta_ai.training.build import build_trainer  # noqa: F401 (re-exported: its old home)
from theta_ai.training.callbacks import GracefulStopCallback
from theta_ai.training.disk import (
    CheckpointSizes,
    DiskSpaceError,
    checkpoint_sizes,
    is_disk_full,
)
from theta_ai.training.host_memory import return_freed_host_memory, reuse_freed_host_memory
from theta_ai.training.inputs import RunInputs, read_run_inputs
from theta_ai.training.lock import RunLock, acquire
from theta_ai.training.onednn_cache import bound_kernel_caches, kernel_cache_entries, kernel_cache_note
from theta_ai.training.setup import (
    checkpoint_folder,
    cpu_bf16_choice,
    describe_device,
    examples_to_jsonl,  # noqa: F401 (re-exported)
    is_main_process,
    load_run_model,
    resume_checkpoint,
    run_log_dir,
    world_size,
)

logger = logging.getLogger("theta_ai")


@dataclass
class PreparedRun:
    """Everything a run needs, resolved and checked, before any training step."""

    cfg: ThetaConfig
    train_examples: list[Example]
    val_examples: list[Example]
    loaded: LoadedModel
    formatter: ExampleFormatter
    train_dataset: Any
    val_dataset: Any
    train_stats: FormatStats
    val_stats: FormatStats
    collator: Any
    training_args: Any
    checkpoint_dir: Path
    log_dir: Path
    resume_from: Path | None
    world_size: int
    notes: list[str] = field(default_factory=list)
    augmenter: Any = None  # theta_ai.augment.Augmenter when --augment is on
    trainer_train_dataset: Any = None  # what Trainer iterates: train_dataset, or its on-the-fly augmented view
    lock: RunLock | None = None  # this process's hold on the checkpoint folder (none in a dry run / other ranks)
    disk: CheckpointSizes | None = None
    chunked_loss: bool = False  # LM head + loss a slice of positions at a time (training/loss.py)
    answer_head: bool = False  # the LM head on the answer positions only (training/loss.py)
    data_report: DataReport | None = None  # each file's layout and each source's examples (load_run_data)

    def close(self) -> None:
        """Let go of the checkpoint folder and give kept host memory back (train() does this when it ends); safe
        to call twice."""
        return_freed_host_memory()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> "PreparedRun":
        return self

    def __exit__(self, *exc) -> None:
        """``with prepare_run(cfg) as run:``: a run inspected and not trained lets go of its folder at the end."""
        self.close()

    def release_model(self) -> None:
        """Drop every reference this run holds to its model and data, so their memory can be freed."""
        self.loaded.model = None
        self.train_dataset = self.val_dataset = self.trainer_train_dataset = self.collator = None

    @property
    def effective_batch(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        batches = math.ceil(len(self.train_dataset) / (self.cfg.batch_size * self.world_size))
        return max(1, math.ceil(batches / self.cfg.grad_accum))

    def banner(self) -> list[str]:
        args = self.training_args
        precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
        total = sum(p.numel() for p in self.loaded.model.parameters())
        trainable = sum(p.numel() for p in self.loaded.model.parameters() if p.requires_grad)
        counts = f"{total / 1e6:.2f}M parameters" + (f", {trainable / 1e6:.2f}M of them train" if trainable < total else "")
        return [
            f"theta-train: preset {self.cfg.preset}, model {self.loaded.source} ({counts}), "
            f"template {self.formatter.template}",
            f"device {describe_device()}, precision {precision}, world size {self.world_size}",
            f"effective batch {self.effective_batch} = {self.cfg.batch_size} per device x {self.cfg.grad_accum} "
            f"accumulation x {self.world_size} process(es)",
            f"examples: {len(self.train_dataset)} train, {len(self.val_dataset)} validation"
            + ("" if self.cfg.val_data else f" (held out: --val-split {self.cfg.val_split:g}, seed {self.cfg.seed})")
            + "; "
            f"{self.steps_per_epoch} optimizer steps per epoch, {self.cfg.epochs:g} epochs",
            *(self.data_report.banner_lines() if self.data_report else []),
            f"checkpoints -> {self.checkpoint_dir}/ ; logs -> {self.log_dir}/ (tensorboard --logdir={self.cfg.logdir})"
            + (f" ; resuming from {self.resume_from}" if self.resume_from else ""),
        ] + ([self.disk.describe()] if self.disk else [])


@dataclass
class TrainResult:
    checkpoint_dir: Path
    best_dir: Path | None
    final_dir: Path | None
    log_dir: Path
    metrics: dict[str, float]
    checkpoints: list[Path]
    stopped_by: str | None = None  # "SIGTERM" / "SIGINT" when a stop request ended the run early
    last_checkpoint: Path | None = None


def prepare_run(cfg: ThetaConfig, inputs: RunInputs | None = None) -> PreparedRun:
    """Load and check data, model and arguments; no training step is taken.

    ``inputs``: the data already read by :func:`theta_ai.training.inputs.read_run_inputs` (theta-train reads it
    before importing this module, so that a data mistake is reported at once); read here when not given.
    """
    inputs = inputs if inputs is not None else read_run_inputs(cfg)
    notes = list(inputs.notes)
    data_report, train_examples, val_examples = inputs.report, inputs.train, inputs.val
    checkpoint_dir = checkpoint_folder(cfg, notes)
    # Refuse a second run on the same folder before anything in it is touched (a dry run writes nothing).
    lock = acquire(checkpoint_dir) if is_main_process() and not cfg.dry_run else None
    try:
        run = _prepare(cfg, notes, train_examples, val_examples, checkpoint_dir, lock)
        run.data_report = data_report
        return run
    except BaseException:
        return_freed_host_memory()
        if lock is not None:
            lock.release()
        raise


def _prepare(cfg, notes, train_examples, val_examples, checkpoint_dir, lock) -> PreparedRun:
    resume_from = resume_checkpoint(cfg, checkpoint_dir, notes)
    saved_world = ckpt.read_run_info(resume_from).get("world_size") if resume_from is not None else None
    if saved_world is not None and saved_world != world_size():
        # Steps per epoch and each rank's shard depend on the process count: Trainer would resume at the wrong
        # place in the data (a 2-process epoch-1 checkpoint is the middle of epoch 1 for one process).
        raise ConfigError(f"--resume: {resume_from} was written by a {saved_world}-process run and this run has "
                          f"{world_size()} process(es); resume with --nproc_per_node/--num_processes {saved_world}, "
                          f"or start a new run from its weights with --load-checkpoint {resume_from}")

    loaded = load_run_model(cfg, train_examples, checkpoint_dir, resume_from, notes)
    formatter = ExampleFormatter(loaded.tokenizer, cfg.template, cfg.max_seq_length, cfg.train_on_prompt)
    notes += formatter.notes
    train_dataset, train_stats = formatter.encode_all(train_examples)
    # validation measures the answers only, also with --train-on-prompt: theta_best is the best at answering, and
    # the validation loss stays comparable across runs and with theta-eval's answer perplexity
    val_formatter = (ExampleFormatter(loaded.tokenizer, cfg.template, cfg.max_seq_length)
                     if cfg.train_on_prompt else formatter)
    val_dataset, val_stats = val_formatter.encode_all(val_examples)
    notes += [f"training data: {w}" for w in train_stats.warnings(cfg.max_seq_length)]
    notes += [f"validation data: {w}" for w in val_stats.warnings(cfg.max_seq_length)]
    if len(train_dataset) == 0 or len(val_dataset) == 0:
        which = "training" if len(train_dataset) == 0 else "validation"
        stats = train_stats if len(train_dataset) == 0 else val_stats
        raise ConfigError(f"no {which} example is left after formatting: "
                          + "; ".join(stats.warnings(cfg.max_seq_length)))

    if cfg.dropout is not None:
        changed = set_dropout(loaded.model, cfg.dropout)
        if not changed:
            notes.append(f"--dropout {cfg.dropout:g}: {type(loaded.model).__name__} has no dropout settings in its "
                         "config; only dropout modules were changed")
    augmenter = None
    trainer_dataset = train_dataset
    if cfg.augment:

        aug_config = AugmentConfig.from_yaml(cfg.augment_config) if cfg.augment_config else AugmentConfig()
        augmenter = Augmenter(aug_config, seed=cfg.seed)
        trainer_dataset = AugmentedDataset([train_examples[i] for i in train_stats.kept], augmenter, formatter,
                                           lengths=list(train_dataset["length"]))
    elif cfg.augment_config:
        notes.append("--augment-config is set but --augment is off; no augmentation is applied")
    if cfg.packing:
        check_packing_isolation(loaded.model)
        collator = MarkedCollator(packing_collator())
    else:
        collator = MarkedCollator(PaddingCollator(pad_token_id=loaded.tokenizer.pad_token_id))
    on_cpu = not cfg.dry_run and not torch.cuda.is_available()
    if cfg.reuse_host_memory and on_cpu:  # before the probe times a step
        line = reuse_freed_host_memory()
        notes += [line] if line else []
    caches_bounded = on_cpu and bound_kernel_caches(kernel_cache_entries(loaded.model))  # before the probe
    loss_path = loss_path_choice(cfg.chunked_loss, loaded.model, notes)  # (chunked, answer_head); the probe times it
    args = build_training_arguments(cfg, checkpoint_dir, notes,
                                    cpu_bf16_choice(cfg, loaded.model, resume_from, notes, loss_path))
    if on_cpu and args.bf16:
        notes.append(kernel_cache_note(caches_bounded))
    run = PreparedRun(cfg, train_examples, val_examples, loaded, formatter, train_dataset, val_dataset,
                      train_stats, val_stats, collator, args, checkpoint_dir, run_log_dir(cfg, resume_from),
                      resume_from, world_size(), notes, augmenter, trainer_dataset, lock,
                      checkpoint_sizes(loaded.model, cfg.epochs, cfg.save_total_limit))
    run.chunked_loss, run.answer_head = loss_path
    total_steps = run.steps_per_epoch * cfg.epochs
    if cfg.warmup_ratio is None and cfg.warmup_steps > total_steps:  # a ratio replaces the steps (training_args)
        notes.append(f"warmup {cfg.warmup_steps} steps is longer than the whole run ({total_steps:.0f} steps): "
                     f"the learning rate never reaches {cfg.learning_rate:g}; lower --warmup-steps or use "
                     "--warmup-ratio 0.1")
    return run


def _is_oom(exc: BaseException) -> bool:

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def oom_message(cfg: ThetaConfig) -> str:
    """What to tell a user whose run ran out of GPU memory: the peak reached and the planner's suggestion."""

    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**30
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        reached = f"peak allocated {peak:.2f} GiB of {total:.2f} GiB"
    else:
        reached = "no CUDA memory statistics on this device"
    try:

        suggestion = next((line.strip() for line in plan_report(cfg, cfg.gpu_memory) if line.strip().startswith("flags:")),
                          None)
    except Exception:  # the planner cannot describe every model; the rest of the advice still holds
        suggestion = None
    advice = (f"the planner suggests {suggestion[len('flags: '):]}" if suggestion else
              "lower --batch-size and raise --grad-accum by the same factor, or --max-seq-length, or add --gradient-checkpointing")
    return (f"CUDA out of memory at batch {cfg.batch_size} x accumulation {cfg.grad_accum} ({reached}); {advice}; "
            f"or pass --auto-batch-size to halve the batch automatically (theta-train --plan shows the estimate)")


def train(cfg: ThetaConfig, prepared: PreparedRun | None = None, callbacks: list | None = None) -> TrainResult:
    """Train a resolved configuration end to end; on CUDA out of memory, stop with advice or (``--auto-batch-size``)
    halve the per-device batch, double the accumulation (same effective batch) and start again.

    A full disk anywhere in the run becomes one :class:`DiskSpaceError` line. The checkpoint folder's lock
    is released when this returns or raises. See :func:`train_once` for what one attempt does.
    """
    run = prepared
    try:
        while True:
            run = run or prepare_run(cfg)
            try:
                return train_once(cfg, run, callbacks)
            except Exception as exc:  # noqa: BLE001 - out-of-memory and full-disk errors handled, the rest re-raised
                if is_disk_full(exc) and not isinstance(exc, DiskSpaceError):
                    raise DiskSpaceError(f"the disk holding {run.checkpoint_dir}/ is full ({exc}); the checkpoints "
                                         "written so far are intact. Free some space, then continue with "
                                         "--resume auto") from None
                if not _is_oom(exc):
                    raise
            # Out of memory. Outside the except block, so the traceback (which pins the failed attempt's
            # trainer, model and optimizer) is gone; the prepared run, which the caller may still hold, lets go
            # of its model too, and only then is the memory released for the next attempt or the user.
            run.release_model()
            release_memory()
            if not cfg.auto_batch_size or cfg.batch_size == 1 or ckpt.latest_checkpoint(run.checkpoint_dir) is not None:
                if cfg.auto_batch_size and cfg.batch_size > 1:
                    raise TrainingOOMError(oom_message(cfg) + "; --auto-batch-size does not restart a run that "
                                           "already wrote checkpoints (their step counts would not match)")
                raise TrainingOOMError(oom_message(cfg))
            smaller = replace(cfg, batch_size=cfg.batch_size // 2, grad_accum=cfg.grad_accum * 2,
                              training_args=dict(cfg.training_args),
                              sources=dict(cfg.sources, batch_size="--auto-batch-size", grad_accum="--auto-batch-size"))
            logger.warning("CUDA out of memory at batch %d x accumulation %d: --auto-batch-size retries with batch "
                           "%d x accumulation %d (same effective batch)", cfg.batch_size, cfg.grad_accum,
                           smaller.batch_size, smaller.grad_accum)
            cfg = smaller
            run.close()
            run = None
    finally:
        if run is not None:
            run.close()


def release_memory() -> None:
    """Collect garbage and empty the accelerator's cache (accelerate's helper: CUDA, XPU, MPS, ...)."""

    clear_device_cache(garbage_collection=True)


def train_once(cfg: ThetaConfig, prepared: PreparedRun | None = None, callbacks: list | None = None) -> TrainResult:
    """Train a resolved configuration end to end and publish ``theta_final``.

    SIGTERM or Ctrl+C stop the run after saving a checkpoint at the current step; the result then has
    ``stopped_by`` set and no ``theta_final`` is written. ``callbacks`` are extra ``TrainerCallback``s.
    """

    run = prepared or prepare_run(cfg)
    trainer = build_trainer(run, callbacks)
    stop = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, GracefulStopCallback))
    try:
        output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    finally:  # Trainer skips on_train_end when training raises: put the previous handlers back regardless
        stop.on_train_end(trainer.args, trainer.state, trainer.control)
    best = run.checkpoint_dir / ckpt.BEST_DIR
    final_dir = None
    if stop.received is None:
        final_dir = run.checkpoint_dir / ckpt.FINAL_DIR
        staging = final_dir.with_name(final_dir.name + ckpt.STAGING_SUFFIX)
        trainer.save_model(str(staging))
        if trainer.args.should_save:
            trainer.write_run_files(staging)
            ckpt.publish(staging, final_dir)
    return TrainResult(run.checkpoint_dir, best if best.is_dir() else None, final_dir, run.log_dir,
                       dict(output.metrics), [p for _, p in ckpt.epoch_checkpoints(run.checkpoint_dir)],
                       stop.received, ckpt.latest_checkpoint(run.checkpoint_dir))
