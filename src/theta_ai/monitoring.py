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

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger("theta_ai")

GIB = 2**30
MEMORY_WARNING_FRACTION = 0.9

# ---------------------------------------------------------------------------- layer groups

EMBEDDINGS, HEAD, OTHER = "embeddings", "head", "other"
_BLOCK = re.compile(r"(?:^|\.)(?:h|layers|layer|blocks|block)\.(\d+)(?:\.|$)")
_EMBEDDING = re.compile(r"(?:^|\.)(?:wte|wpe|embed_tokens|embed_positions|word_embeddings|position_embeddings|"
                        r"token_type_embeddings|embeddings)(?:\.|$)")
_HEAD = re.compile(r"(?:^|\.)(?:ln_f|norm|final_layernorm|final_layer_norm|final_norm|lm_head)(?:\.|$)")


def layer_group(name: str) -> str:
    """The group of a parameter name: ``embeddings``, ``block_N``, ``head`` or ``other``.

    >>> [layer_group(n) for n in ("transformer.wpe.weight", "transformer.h.1.attn.c_attn.weight",
    ...                           "model.norm.weight", "lm_head.weight", "score.weight")]
    ['embeddings', 'block_1', 'head', 'head', 'other']
    """
    block = _BLOCK.search(name)
    if block:
        return f"block_{int(block.group(1))}"
    if _EMBEDDING.search(name):
        return EMBEDDINGS
    if _HEAD.search(name):
        return HEAD
    return OTHER


def _group_order(group: str) -> tuple[int, int]:
    if group == EMBEDDINGS:
        return (0, 0)
    if group.startswith("block_"):
        return (1, int(group[len("block_"):]))
    return (2, 0) if group == HEAD else (3, 0)


def parameter_groups(model, trainable_only: bool = True) -> dict[str, list]:
    """``{group: [parameter, ...]}`` in model order: embeddings, block_0, block_1, ..., head, other.

    ``named_parameters`` lists a tied ``lm_head`` once, under the embeddings, so a tied head group
    holds only the final norm.
    """
    groups: dict[str, list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad or not trainable_only:
            groups.setdefault(layer_group(name), []).append(param)
    return {g: groups[g] for g in sorted(groups, key=_group_order)}


def _is_sharded(tensor) -> bool:
    return type(tensor).__name__ == "DTensor"


def group_grad_norms(groups: Mapping[str, list]) -> dict[str, float]:
    """L2 norm of each group's gradients (groups without gradients are left out), with one host sync."""
    import torch

    names, norms = [], []
    for group, params in groups.items():
        grads = [p.grad.detach() for p in params if p.grad is not None and not _is_sharded(p.grad)]
        if not grads:
            continue
        per_param = [torch.linalg.vector_norm(g, 2, dtype=torch.float32) for g in grads]
        device = per_param[0].device
        norms.append(torch.linalg.vector_norm(torch.stack([n.to(device) for n in per_param])))
        names.append(group)
    if not norms:
        return {}
    device = norms[0].device
    return dict(zip(names, torch.stack([n.to(device) for n in norms]).tolist()))


def _flat_cpu(tensors) -> Any:
    import torch

    return torch.cat([t.detach().float().flatten().cpu() for t in tensors])


# ---------------------------------------------------------------------------- base


class _WriterCallback(TrainerCallback):
    """Holds the run's ``SummaryWriter``; does nothing off the main process."""

    def __init__(self, writer):
        self.writer = writer

    def _active(self, state) -> bool:
        return self.writer is not None and state.is_world_process_zero


# ---------------------------------------------------------------------------- gradients


class GradientMonitorCallback(_WriterCallback):
    """Per-layer-group gradient norms every ``grad_log_steps`` optimizer steps (0 = off), and
    gradient/weight histograms per group every ``histogram_steps`` (0 = off).

    Runs in ``on_pre_optimizer_step``: gradients are unscaled and clipped there (see the module
    docstring). Steps are numbered like Trainer's logs: the ``k``-th optimizer step is logged at ``k``,
    next to ``train/grad_norm`` of the same step. Histograms copy the group's tensors to the CPU, so
    keep ``histogram_steps`` large for big models. Only trainable parameters are included.
    """

    def __init__(self, writer, grad_log_steps: int = 50, histogram_steps: int = 0):
        super().__init__(writer)
        self.grad_log_steps = max(0, int(grad_log_steps or 0))
        self.histogram_steps = max(0, int(histogram_steps or 0))
        self._skip_reason: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        sharded = [name for name in ("fsdp", "deepspeed") if getattr(args, name, None)]
        self._skip_reason = f"{sharded[0]} shards the gradients across processes" if sharded else None
        if self._skip_reason and self._active(state) and (self.grad_log_steps or self.histogram_steps):
            logger.info("per-layer gradient norms and histograms are off: %s", self._skip_reason)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if not self._active(state) or model is None or self._skip_reason:
            return
        step = state.global_step + 1  # global_step counts finished optimizer steps; this one is about to run
        norms_due = self.grad_log_steps and step % self.grad_log_steps == 0
        histograms_due = self.histogram_steps and step % self.histogram_steps == 0
        if not (norms_due or histograms_due):
            return
        groups = parameter_groups(model)
        if norms_due:
            norms = group_grad_norms(groups)
            for group, value in norms.items():
                self.writer.add_scalar(f"grad_norm/{group}", value, step)
            if norms:
                self.writer.add_scalar("grad_norm/total", math.sqrt(sum(v * v for v in norms.values())), step)
        if histograms_due:
            for group, params in groups.items():
                weights = [p for p in params if not _is_sharded(p)]
                grads = [p.grad for p in params if p.grad is not None and not _is_sharded(p.grad)]
                if weights:
                    self.writer.add_histogram(f"weights/{group}", _flat_cpu(weights), step)
                if grads:
                    self.writer.add_histogram(f"gradients/{group}", _flat_cpu(grads), step)


# ---------------------------------------------------------------------------- throughput


class ThroughputCallback(_WriterCallback):
    """Samples and tokens per second over the interval between two training logging steps.

    The interval is wall time (``time.perf_counter``) minus the time spent in evaluation and
    checkpoint saving, so the rate is the training speed (data loading included). Tokens are
    Trainer's own count ``state.num_input_tokens_seen`` (summed over all processes), which Trainer
    keeps only with ``TrainingArguments(include_num_input_tokens_seen="non_padding")`` (real tokens:
    the attention-mask ones); without it only samples/s is written. Samples come from the epoch
    progress (``state.epoch x`` training set size), which is exact at each epoch end.
    """

    def __init__(self, writer, clock: Callable[[], float] = time.perf_counter):
        super().__init__(writer)
        self.clock = clock
        self.track_tokens = False
        self.num_samples: int | None = None
        self._mark: dict[str, float] = {}
        self._paused = 0.0
        self._pause_from: float | None = None
        self._last_step_end: float | None = None

    def _reset(self, state) -> None:
        self._mark = {"time": self.clock(), "tokens": state.num_input_tokens_seen or 0,
                      "epoch": state.epoch or 0.0, "step": state.global_step}
        self._paused = 0.0

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.track_tokens = getattr(args, "include_num_input_tokens_seen", "no") not in ("no", False, None)
        try:
            self.num_samples = len(train_dataloader.dataset)
        except (AttributeError, TypeError):
            self.num_samples = None
        if self._active(state) and not self.track_tokens:
            logger.info("throughput/tokens_per_second needs TrainingArguments(include_num_input_tokens_seen="
                        "'non_padding'); only samples/s is logged")
        self._pause_from = self._last_step_end = None
        self._reset(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._last_step_end = self.clock()

    def _pause(self) -> None:
        if self._pause_from is None:
            self._pause_from = self._last_step_end if self._last_step_end is not None else self.clock()

    def on_evaluate(self, args, state, control, **kwargs):
        self._pause()

    def on_save(self, args, state, control, **kwargs):
        self._pause()

    def _resume(self) -> None:
        if self._pause_from is not None:
            self._paused += self.clock() - self._pause_from
            self._pause_from = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._resume()

    def on_step_begin(self, args, state, control, **kwargs):
        self._resume()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or not self._mark:  # a training log, not eval or the final summary
            return
        now = self.clock()
        elapsed = now - self._mark["time"] - self._paused
        if self._active(state) and elapsed > 0:
            if self.num_samples and state.epoch is not None:
                samples = (state.epoch - self._mark["epoch"]) * self.num_samples
            else:
                samples = ((state.global_step - self._mark["step"]) * args.per_device_train_batch_size
                           * args.gradient_accumulation_steps * args.world_size)
            self.writer.add_scalar("throughput/samples_per_second", samples / elapsed, state.global_step)
            if self.track_tokens:
                tokens = state.num_input_tokens_seen - self._mark["tokens"]
                self.writer.add_scalar("throughput/tokens_per_second", tokens / elapsed, state.global_step)
        self._reset(state)


# ---------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryReading:
    """Bytes in use. ``cuda_*`` are None when the run does not use a GPU."""

    rss: int | None = None
    cuda_allocated: int | None = None
    cuda_reserved: int | None = None
    cuda_peak: int | None = None  # torch.cuda.max_memory_allocated since the start of the process
    cuda_total: int | None = None


def read_memory() -> MemoryReading:
    """This process's resident memory and, once CUDA is in use, the current GPU's allocator numbers."""
    rss = None
    try:
        import psutil

        rss = psutil.Process().memory_info().rss
    except ImportError:  # psutil comes with accelerate; fall back to the peak from getrusage (KiB on Linux)
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return MemoryReading(rss=rss)
    device = torch.cuda.current_device()
    return MemoryReading(rss=rss, cuda_allocated=torch.cuda.memory_allocated(device),
                         cuda_reserved=torch.cuda.memory_reserved(device),
                         cuda_peak=torch.cuda.max_memory_allocated(device),
                         cuda_total=torch.cuda.get_device_properties(device).total_memory)


def memory_warning(reading: MemoryReading) -> str:
    return (f"GPU memory peak {reading.cuda_peak / GIB:.1f} GiB is {reading.cuda_peak / reading.cuda_total:.0%} of "
            f"the card's {reading.cuda_total / GIB:.1f} GiB, close to running out; to lower it use a lower "
            "--batch-size with a higher --grad-accum (same effective batch), a smaller --max-seq-length, or "
            "--gradient-checkpointing; --plan shows settings that fit this card")


class MemoryCallback(_WriterCallback):
    """``memory/rss_gib`` and, on a GPU, ``memory/cuda_allocated_gib``, ``memory/cuda_reserved_gib`` and
    ``memory/cuda_peak_gib`` at every training logging step. The first time the CUDA peak passes 90% of
    the card, one warning names the flags that lower it (once per run).

    ``memory_reader`` returns a :class:`MemoryReading`; tests pass a fake one.
    """

    def __init__(self, writer, memory_reader: Callable[[], MemoryReading] = read_memory,
                 warn_fraction: float = MEMORY_WARNING_FRACTION):
        super().__init__(writer)
        self.memory_reader = memory_reader
        self.warn_fraction = warn_fraction
        self.warned = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._active(state) or not logs or "loss" not in logs:
            return
        reading = self.memory_reader()
        step = state.global_step
        if reading.rss is not None:
            self.writer.add_scalar("memory/rss_gib", reading.rss / GIB, step)
        for name in ("allocated", "reserved", "peak"):
            value = getattr(reading, f"cuda_{name}")
            if value is not None:
                self.writer.add_scalar(f"memory/cuda_{name}_gib", value / GIB, step)
        if (not self.warned and reading.cuda_peak is not None and reading.cuda_total
                and reading.cuda_peak >= self.warn_fraction * reading.cuda_total):
            self.warned = True
            logger.warning(memory_warning(reading))


# ---------------------------------------------------------------------------- text


def _md_cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def config_markdown(cfg_dict: Mapping[str, Any]) -> str:
    """The resolved configuration as a two-column Markdown table (TensorBoard renders it in TEXT)."""
    rows = [f"| {_md_cell(key)} | {_md_cell(value)} |" for key, value in cfg_dict.items()]
    return "\n".join(["| option | value |", "|---|---|", *rows])


class ConfigTextCallback(_WriterCallback):
    """The run's resolved configuration as the ``config`` text tag, at the start of training."""

    def __init__(self, writer, cfg_dict: Mapping[str, Any]):
        super().__init__(writer)
        self.cfg_dict = dict(cfg_dict)

    def on_train_begin(self, args, state, control, **kwargs):
        if self._active(state):
            self.writer.add_text("config", config_markdown(self.cfg_dict), state.global_step)
            self.writer.flush()


def predictions_markdown(questions, references, predictions) -> str:
    rows = [f"| {i} | {_md_cell(q)} | {_md_cell(r)} | {_md_cell(p)} |"
            for i, (q, r, p) in enumerate(zip(questions, references, predictions))]
    return "\n".join(["| # | question | reference | prediction |", "|---|---|---|---|", *rows])


class PredictionTextCallback(_WriterCallback):
    """Example predictions at each evaluation as the ``eval/predictions`` text tag.

    ``GenerationEvalCallback`` generates the answers (and writes only scalars); this callback reads
    its ``examples`` and ``last_predictions``, so it must come *after* it in the callbacks list.
    """

    def __init__(self, writer, generation_callback):
        super().__init__(writer)
        self.generation_callback = generation_callback
        self._written: int | None = None

    def on_evaluate(self, args, state, control, **kwargs):
        predictions = self.generation_callback.last_predictions
        if not self._active(state) or not predictions or id(predictions) == self._written:
            return
        self._written = id(predictions)
        examples = self.generation_callback.examples
        self.writer.add_text("eval/predictions", predictions_markdown([e.question for e in examples],
                                                                      [e.answer for e in examples], predictions),
                             state.global_step)
        self.writer.flush()


# ---------------------------------------------------------------------------- hparams

HPARAM_KEYS = ("learning_rate", "batch_size", "grad_accum", "effective_batch", "epochs", "max_seq_length",
               "weight_decay", "warmup_steps", "warmup_ratio", "lr_scheduler", "model_name", "preset", "augment",
               "lora")
LORA_KEYS = ("lora_r", "lora_alpha")  # only with lora on


def run_hparams(cfg_dict: Mapping[str, Any], world_size: int = 1) -> dict[str, Any]:
    """The hyperparameters the HParams view compares; keys missing from (or None in) the config are left out.

    ``lora`` is there when the config has the option; ``lora_r`` and ``lora_alpha`` only when it is on.
    """
    values = dict(cfg_dict)
    if values.get("batch_size") and values.get("grad_accum"):
        values["effective_batch"] = values["batch_size"] * values["grad_accum"] * max(1, world_size)
    keys = HPARAM_KEYS + (LORA_KEYS if values.get("lora") else ())
    out: dict[str, Any] = {}
    for key in keys:
        value = values.get(key)
        if value is None:
            continue
        out[key] = value if isinstance(value, (bool, int, float, str)) else _md_cell(value)
    return out


def eval_loss_metrics(log_history) -> dict[str, float]:
    """``hparam/eval_loss`` (the last evaluation) and ``hparam/best_eval_loss`` from ``state.log_history``."""
    losses = [entry["eval_loss"] for entry in log_history or () if isinstance(entry.get("eval_loss"), (int, float))]
    if not losses:
        return {}
    return {"hparam/eval_loss": float(losses[-1]), "hparam/best_eval_loss": float(min(losses))}


class HParamsCallback(_WriterCallback):
    """At the end of training, the run's hyperparameters and final/best validation loss for the HParams view.

    ``add_hparams(..., run_name=".")`` writes into the run folder itself (torch joins ``log_dir`` and
    ``run_name``), so the HParams view lists this run next to its curves instead of a timestamped
    sub-run. The losses come from ``state.log_history``, which a resumed run restores.
    """

    def __init__(self, writer, cfg_dict: Mapping[str, Any]):
        super().__init__(writer)
        self.cfg_dict = dict(cfg_dict)

    def on_train_end(self, args, state, control, **kwargs):
        if not self._active(state):
            return
        hparams = run_hparams(self.cfg_dict, getattr(args, "world_size", 1))
        metrics = eval_loss_metrics(state.log_history)
        # Trainer's TensorBoardCallback closes the shared writer in its own on_train_end; add_hparams
        # then reopens it (a new events file in the same folder), so close it again afterwards.
        was_closed = getattr(self.writer, "all_writers", ()) is None
        self.writer.add_hparams(hparams, metrics, run_name=".", global_step=state.global_step)
        if was_closed:
            self.writer.close()
        else:
            self.writer.flush()


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
