"""``--report-to``: Trainer's own tracker callbacks, and theta_ai's own scalars sent to the same trackers.

Trainer reports its logs (loss, learning rate, evaluation metrics) to Weights & Biases and MLflow through its
integration callbacks (``report_to=["wandb", "mlflow"]``); TensorBoard goes through the one ``SummaryWriter``
of the run folder, as before. theta_ai's callbacks (gradient norms, throughput, memory, generation metrics, the
spike guard) write to a :class:`TrackerWriter`, which has the ``SummaryWriter`` methods they use and sends each
scalar to TensorBoard and to every other tracker of the run, at the same global step (MLflow names them as
Trainer's callback does: ``eval_rougeL``, ``grad_norm_total``)::

    theta-train --preset cpu-quickstart --report-to tensorboard,mlflow   # MLFLOW_TRACKING_URI decides where
    theta-train --preset cpu-quickstart --report-to wandb                # WANDB_MODE=offline works offline

Texts (the config table, example predictions) and histograms stay TensorBoard's; ``none`` turns every tracker off
(the console, ``train.log`` and ``loss.png`` remain).
"""

from __future__ import annotations

from typing import Any


def run_trackers(report_to: str) -> tuple[bool, list[str]]:
    """``--report-to`` as (TensorBoard on?, the other trackers)."""
    names = [] if report_to == "none" else report_to.split(",")
    return "tensorboard" in names, [n for n in names if n != "tensorboard"]


class TrackerWriter:
    """The ``SummaryWriter`` methods theta_ai's callbacks call, fanned out to TensorBoard, W&B and MLflow.

    ``tensorboard`` is the run's ``SummaryWriter`` or None; ``trackers`` names the others. A tracker's run is the
    one Trainer's callback started (``wandb.run``, ``mlflow.active_run()``); before it starts or after it ends a
    scalar goes to TensorBoard only.
    """

    def __init__(self, tensorboard: Any = None, trackers: list[str] | tuple[str, ...] = ()) -> None:
        self.tensorboard = tensorboard
        self.trackers = tuple(trackers)

    def add_scalar(self, tag: str, value: float, global_step: int | None = None, *args: Any, **kwargs: Any) -> None:
        if self.tensorboard is not None:
            self.tensorboard.add_scalar(tag, value, global_step, *args, **kwargs)
        if "wandb" in self.trackers:
            import wandb

            if wandb.run is not None:  # WandbCallback's step axis is train/global_step
                wandb.log({tag: float(value), "train/global_step": global_step or 0})
        if "mlflow" in self.trackers:
            import mlflow

            if mlflow.active_run() is not None:  # eval/rougeL -> eval_rougeL, beside Trainer's eval_loss; a file
                # store also cannot hold grad_norm (Trainer's) and grad_norm/total (a file and a folder of one name)
                mlflow.log_metric(tag.replace("/", "_"), float(value), step=global_step or 0)

    def add_text(self, *args: Any, **kwargs: Any) -> None:
        if self.tensorboard is not None:
            self.tensorboard.add_text(*args, **kwargs)

    def add_histogram(self, *args: Any, **kwargs: Any) -> None:
        if self.tensorboard is not None:
            self.tensorboard.add_histogram(*args, **kwargs)

    def add_hparams(self, *args: Any, **kwargs: Any) -> None:
        if self.tensorboard is not None:
            self.tensorboard.add_hparams(*args, **kwargs)

    def flush(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
