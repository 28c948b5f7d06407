"""The ThetaTrainer of a prepared run, with theta_ai's callbacks and what each checkpoint records.

The callbacks are added in the order their hooks must run: the generation metrics first (they add
``eval_rougeL`` & co. before anything reads the metrics), then theta_best, the epoch line and the stop
flag, then monitoring (before TensorBoard's own callback, which closes the writer), then the optional ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.utils.tensorboard import SummaryWriter
from transformers import EarlyStoppingCallback, PrinterCallback, ProgressCallback
from transformers.integrations import TensorBoardCallback

from theta_ai import __version__
from theta_ai.eval.callback import GenerationEvalCallback
from theta_ai.metrics.trainer_metrics import compute_metrics, preprocess_logits_for_metrics
from theta_ai.model.quantize import kbit_bits
from theta_ai.monitoring import monitoring_callbacks
from theta_ai.monitoring.plot import PLOT_FILE, LossPlotCallback, run_title
from theta_ai.monitoring.trackers import TrackerWriter, run_trackers
from theta_ai.training import checkpoints as ckpt
from theta_ai.training.host_memory import reusing_freed_host_memory
from theta_ai.training.callbacks import (
    BestModelCallback,
    EpochAwareDatasetCallback,
    EpochSummaryCallback,
    GracefulStopCallback,
    HostMemoryTrimCallback,
    SpikeGuardCallback,
    TrainingProgressCallback,
)
from theta_ai.training.setup import examples_to_jsonl, is_main_process
from theta_ai.training.trainer import ThetaTrainer

if TYPE_CHECKING:  # pragma: no cover
    from theta_ai.training.run import PreparedRun


def _run_info(run: "PreparedRun") -> dict:
    cfg = run.cfg
    return {"theta_ai_version": _version(), "preset": cfg.preset, "model_name": cfg.model_name,
            "template": run.formatter.template, "max_seq_length": cfg.max_seq_length,
            "precision": "fp16" if run.training_args.fp16 else "bf16" if run.training_args.bf16 else "fp32",
            "train_on_prompt": cfg.train_on_prompt, "data": cfg.data, "val_data": cfg.val_data,
            "val_split": None if cfg.val_data else cfg.val_split, "seed": cfg.seed, "log_dir": str(run.log_dir),
            "loss_plot": str((run.log_dir / PLOT_FILE).resolve()),  # theta-eval's report links it
            "validation_file": ckpt.VALIDATION_FILE, "world_size": run.world_size,
            "quantization": kbit_bits(cfg)}  # the base's k-bit loading (QLoRA): merges go into the unquantised base


def _version() -> str:

    return __version__


def build_trainer(run: "PreparedRun", callbacks: list | None = None):
    """The ThetaTrainer for a prepared run, with theta_ai's callbacks (plus ``callbacks``)."""
    cfg = run.cfg
    writer = None  # theta_ai's scalars: TensorBoard and the other --report-to trackers, on the main process only
    tensorboard, trackers = run_trackers(cfg.report_to)
    if is_main_process() and (tensorboard or trackers):
        writer = TrackerWriter(SummaryWriter(log_dir=str(run.log_dir)) if tensorboard else None, trackers)
    run.training_args.run_name = run.log_dir.name  # the run's name in W&B / MLflow: its log folder's
    theta_callbacks: list = []
    generation = None
    if cfg.generation_eval:  # first: it adds eval_rougeL & co. before anything reads the metrics
        # the subset in one batch of up to 8 (generating needs no backward pass, so a batch of 8 fits wherever
        # training at batch 4 does), or the evaluation batch when that is larger
        batch = max(cfg.eval_batch_size or cfg.batch_size, min(cfg.generation_eval, 8))
        generation = GenerationEvalCallback(run.val_examples, run.formatter, num_examples=cfg.generation_eval,
                                            seed=cfg.seed, batch_size=batch, tb_writer=writer)
        theta_callbacks.append(generation)
    theta_callbacks += [BestModelCallback(run.checkpoint_dir, run.training_args.metric_for_best_model,
                                          with_optimizer=cfg.spike_guard),
                        EpochSummaryCallback(len(generation.examples) if generation else None), GracefulStopCallback()]
    if writer is not None:
        # before TensorBoardCallback: it closes the writer in on_train_end, and hparams are written in ours
        theta_callbacks += monitoring_callbacks(writer, cfg.as_dict(), cfg.grad_log_steps, cfg.histogram_steps,
                                                generation_callback=generation)
        if writer.tensorboard is not None:
            theta_callbacks.append(TensorBoardCallback(tb_writer=writer.tensorboard))
    if is_main_process():
        theta_callbacks.append(LossPlotCallback(run.log_dir, run_title(run.log_dir.name, cfg.preset, cfg.model_name)))
    if run.trainer_train_dataset is not run.train_dataset:
        theta_callbacks.append(EpochAwareDatasetCallback(run.trainer_train_dataset))
    if reusing_freed_host_memory():
        theta_callbacks.append(HostMemoryTrimCallback())
    if cfg.early_stopping_patience:
        theta_callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if cfg.spike_guard:
        theta_callbacks.append(SpikeGuardCallback(run.checkpoint_dir, cfg.spike_factor, cfg.spike_lr_factor,
                                                  cfg.spike_max_rollbacks, writer))
    trainer = ThetaTrainer(model=run.loaded.model, args=run.training_args, data_collator=run.collator,
                           compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess_logits_for_metrics,
                           train_dataset=run.trainer_train_dataset, eval_dataset=run.val_dataset,
                           processing_class=run.loaded.tokenizer, callbacks=theta_callbacks + list(callbacks or []),
                           run_info=_run_info(run),
                           validation_jsonl=examples_to_jsonl(run.val_examples),
                           keep_checkpoints=run.cfg.save_total_limit, chunked_loss=run.chunked_loss,
                           answer_head=run.answer_head)
    # theta_ai's one progress bar (loss, learning rate, tokens/s; raw log dictionaries to train.log) in place of
    # whichever one Trainer added: ProgressCallback, PrinterCallback (disable_tqdm) or NotebookProgressCallback.
    for default in list(trainer.callback_handler.callbacks):
        if type(default) in (ProgressCallback, PrinterCallback) or type(default).__name__ == "NotebookProgressCallback":
            trainer.remove_callback(default)
    trainer.add_callback(TrainingProgressCallback(show_bar=not run.training_args.disable_tqdm))
    return trainer
