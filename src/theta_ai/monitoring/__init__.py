"""TensorBoard monitoring for theta-train, as ``TrainerCallback`` hooks on Trainer's own loop.

Everything goes through the ONE ``SummaryWriter`` that ``build_trainer`` creates for the run folder
(``logs/<preset>-<time>/``), and only on the main process: other ranks get ``writer=None`` and
:func:`monitoring_callbacks` then returns no callbacks at all::

    writer = SummaryWriter(log_dir=str(run.log_dir))              # main process only
    callbacks += monitoring_callbacks(writer, run.cfg.as_dict())  # [] when writer is None

What lands in TensorBoard (``tensorboard --logdir logs``), and who writes it:

- Trainer's ``TensorBoardCallback`` (not repeated here): ``train/loss``, ``train/learning_rate``,
  ``train/grad_norm`` (total norm *before* clipping) and ``train/epoch`` at every logging step;
  ``eval/loss``, ``eval/runtime``, ``eval/samples_per_second``... at every evaluation;
  ``train/train_loss``, ``train/train_runtime``... once at the end; ``args`` and ``model_config`` text
  at the start. (Its ``rewrite_logs``: ``eval_x`` -> ``eval/x``, anything else -> ``train/x``.)
- :class:`GradientMonitorCallback`: ``grad_norm/<group>`` and ``grad_norm/total`` every
  ``grad_log_steps`` optimizer steps; histograms ``gradients/<group>`` and ``weights/<group>`` every
  ``histogram_steps``.
- :class:`ThroughputCallback`: ``throughput/samples_per_second``, ``throughput/tokens_per_second``
  at every training logging step.
- :class:`MemoryCallback`: ``memory/rss_gib`` and, on a GPU, ``memory/cuda_allocated_gib``,
  ``memory/cuda_reserved_gib``, ``memory/cuda_peak_gib`` at every training logging step.
- :class:`ConfigTextCallback`: the ``config`` text (resolved options as a table) at the start.
- :class:`PredictionTextCallback`: ``eval/predictions`` text at every evaluation.
- :class:`~theta_ai.monitoring.plot.LossPlotCallback` (not TensorBoard): ``loss.png`` in the same folder at the
  end of training, the one picture of the run that needs no server (:mod:`theta_ai.monitoring.plot`).
- :class:`HParamsCallback`: the HParams view entry with ``hparam/eval_loss`` and
  ``hparam/best_eval_loss`` at the end of training.

Layer groups: ``embeddings`` (token + position embeddings), ``block_0``, ``block_1``... (one per
transformer block), ``head`` (final norm, plus ``lm_head`` when it is not tied to the embeddings:
a tied ``lm_head`` *is* the embedding matrix, so its gradient is counted there) and ``other``.
They are read from parameter names, so GPT-2 (``transformer.wte/wpe``, ``transformer.h.N``,
``transformer.ln_f``, ``lm_head``), Llama/Qwen/Mistral (``model.embed_tokens``, ``model.layers.N``,
``model.norm``, ``lm_head``) and LoRA-wrapped versions of them all work.

Where the gradients are read (transformers 5.x ``Trainer._run_epoch``): after the last micro-batch
of an accumulation cycle Trainer calls ``accelerator.clip_grad_norm_`` (which first *unscales* fp16
gradients, then clips them to ``max_grad_norm``; with ``max_grad_norm=0`` it still unscales while
measuring the norm), and only then ``on_pre_optimizer_step``. So ``grad_norm/<group>`` are norms of
the gradients the optimizer steps with: unscaled, and already clipped. ``grad_norm/total`` is their
combined norm; when it sits at ``max_grad_norm`` (1.0 by default) that step was clipped, every
group was multiplied by the same factor, and the unclipped size is Trainer's ``train/grad_norm``
(so ``unclipped group norm = grad_norm/<group> x train/grad_norm / grad_norm/total`` at steps where
both are logged). Which group dominates or spikes reads the same either way. Under FSDP or
DeepSpeed the gradients are sharded across ranks and this main-process-only callback skips them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger("theta_ai")

__all__ = [
    "GIB", "MEMORY_WARNING_FRACTION", "ConfigTextCallback", "GradientMonitorCallback", "HParamsCallback",
    "MemoryCallback", "MemoryReading", "PredictionTextCallback", "ThroughputCallback", "config_markdown",
    "eval_loss_metrics", "group_grad_norms", "layer_group", "memory_warning", "monitoring_callbacks",
    "parameter_groups", "predictions_markdown", "read_memory", "run_hparams",
    "LossPlotCallback", "PLOT_FILE", "load_log_history", "plot_loss", "write_loss_plot",
]

from theta_ai.monitoring.plot import PLOT_FILE, LossPlotCallback, load_log_history, plot_loss, write_loss_plot
from theta_ai.monitoring.base import GIB, MEMORY_WARNING_FRACTION
from theta_ai.monitoring.gradients import GradientMonitorCallback, group_grad_norms, layer_group, parameter_groups
from theta_ai.monitoring.system import MemoryCallback, MemoryReading, ThroughputCallback, memory_warning, read_memory
from theta_ai.monitoring.run_text import (ConfigTextCallback, HParamsCallback, PredictionTextCallback, config_markdown, eval_loss_metrics,
                   predictions_markdown, run_hparams)

# ---------------------------------------------------------------------------- assembly


def monitoring_callbacks(writer, cfg_dict: Mapping[str, Any], grad_log_steps: int | None = None,
                         histogram_steps: int | None = None, *, generation_callback=None,
                         memory_reader: Callable[[], MemoryReading] = read_memory) -> list[TrainerCallback]:
    """theta_ai's TensorBoard callbacks for one run, writing through ``writer``; ``[]`` when ``writer`` is None.

    ``cfg_dict`` is ``ThetaConfig.as_dict()``; ``grad_log_steps`` and ``histogram_steps`` default to its
    values. Pass the run's ``GenerationEvalCallback`` as ``generation_callback`` to log its example
    predictions as text, and put these callbacks after it.
    """
    if writer is None:
        return []
    grad_log_steps = cfg_dict.get("grad_log_steps", 50) if grad_log_steps is None else grad_log_steps
    histogram_steps = cfg_dict.get("histogram_steps", 0) if histogram_steps is None else histogram_steps
    callbacks: list[TrainerCallback] = [ConfigTextCallback(writer, cfg_dict),
                                        GradientMonitorCallback(writer, grad_log_steps, histogram_steps),
                                        ThroughputCallback(writer), MemoryCallback(writer, memory_reader),
                                        HParamsCallback(writer, cfg_dict)]
    if generation_callback is not None:
        callbacks.append(PredictionTextCallback(writer, generation_callback))
    return callbacks
