"""``loss.png``: one picture of a run, without a server.

Drawn from Trainer's ``state.log_history`` (the same list ``trainer_state.json`` holds) at the end of
training and of each resumed part, into the run's log folder (``logs/<preset>-<time>/loss.png``)::

    from theta_ai.monitoring.plot import load_log_history, plot_loss
    fig = plot_loss(load_log_history("models/theta_best/trainer_state.json"), title="my run")
    fig.savefig("loss.png")

One figure: the training loss at every logging step (faint) with a smoothed curve over it, the
validation loss at every evaluation, the learning rate on a second y axis, the epochs on a second x axis,
the best evaluation marked (by ``metric_for_best_model``), and where a resumed part began.
LLaMA-Factory's ``plot_loss`` is the anchor (one PNG per key, EMA-smoothed training loss); this puts what
a reader compares on one picture, and smooths without lag (:func:`smooth`).

matplotlib is the optional ``plot`` extra (``pip install "theta_ai[plot]"``): without it training says so in
one line and writes no picture. Only ``matplotlib.figure.Figure`` and the Agg canvas are used, never pyplot,
so no GUI backend is touched and nothing global changes (safe inside a notebook or a training process).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger("theta_ai")

PLOT_FILE = "loss.png"
INSTALL_HINT = 'pip install "theta_ai[plot]"'


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def load_log_history(path: str | Path) -> list[dict[str, Any]]:
    """``log_history`` from a ``trainer_state.json`` file (or a checkpoint folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "trainer_state.json"
    return list(json.loads(path.read_text(encoding="utf-8")).get("log_history", []))


def smooth(values: Sequence[float], window: int | None = None) -> list[float]:
    """A centred moving average (the window shrinks symmetrically at both ends, so the ends are the raw values).

    Centred, not LLaMA-Factory's exponential average: an EMA lags a falling loss (by ~10 logging steps at its
    weight of 0.9), which draws the smoothed curve above every raw point of a long run.
    """
    n = len(values)
    if n < 3:
        return [float(v) for v in values]
    half = (window or max(3, min(51, n // 15))) // 2
    out = []
    for i in range(n):
        h = min(half, i, n - 1 - i)
        chunk = values[i - h:i + h + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def _series(history: Iterable[Mapping[str, Any]], key: str) -> tuple[list[int], list[float], list[float]]:
    steps, values, epochs = [], [], []
    for entry in history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and "step" in entry:
            steps.append(int(entry["step"]))
            values.append(float(value))
            epochs.append(float(entry.get("epoch", math.nan)))
    return steps, values, epochs


def best_evaluation(history: Iterable[Mapping[str, Any]], metric: str = "eval_loss",
                    greater_is_better: bool = False) -> dict[str, Any] | None:
    """The evaluation entry with the best ``metric`` (the first of equals), or None."""
    best = None
    for entry in history:
        value = entry.get(metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if best is None or (value > best[metric] if greater_is_better else value < best[metric]):
            best = dict(entry)
    return best


def _steps_per_epoch(history: Sequence[Mapping[str, Any]]) -> float | None:
    for entry in reversed(history):
        epoch, step = entry.get("epoch"), entry.get("step")
        if isinstance(epoch, (int, float)) and epoch > 0 and isinstance(step, int) and step > 0:
            return step / epoch
    return None


def plot_loss(history: Sequence[Mapping[str, Any]], *, title: str = "", metric: str = "eval_loss",
              greater_is_better: bool = False, resumed_at: Iterable[int] = ()):
    """The run's picture as a ``matplotlib.figure.Figure`` (not shown, not saved: call ``savefig``).

    Lines carry labels a test can find: ``training loss``, ``training loss (smoothed)``, ``validation loss``
    (on ``fig.axes[0]``) and ``learning rate`` (on its twin y axis).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    history = [e for e in history if isinstance(e, Mapping)]
    fig = Figure(figsize=(10, 5.6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    train_steps, train_loss, _ = _series(history, "loss")
    eval_steps, eval_loss, eval_epochs = _series(history, "eval_loss")
    lr_steps, lr, _ = _series(history, "learning_rate")

    handles = []
    if train_loss:
        many = len(train_loss) >= 8
        (raw,) = ax.plot(train_steps, train_loss, color="tab:blue", alpha=0.3 if many else 1.0, linewidth=1,
                         marker=None if many else ".", label="training loss")
        handles.append(raw)
        if many:
            (smoothed,) = ax.plot(train_steps, smooth(train_loss), color="tab:blue", linewidth=2,
                                  label="training loss (smoothed)")
            handles.append(smoothed)
    if eval_loss:
        (val,) = ax.plot(eval_steps, eval_loss, color="tab:orange", linewidth=2, marker="o", markersize=5,
                         label="validation loss")
        handles.append(val)

    best = best_evaluation(history, metric, greater_is_better)
    if best is not None and "step" in best:
        y = best.get("eval_loss")
        ax.axvline(best["step"], color="tab:red", linestyle=":", linewidth=1.2)
        shown = f"{metric} {best[metric]:.4g}" + (f", validation loss {y:.4g}" if metric != "eval_loss" and y else "")
        label = f"best: epoch {best.get('epoch', 0):g} (step {best['step']}), {shown}"
        if isinstance(y, (int, float)):
            (star,) = ax.plot([best["step"]], [y], linestyle="none", marker="*", markersize=16, color="tab:red",
                              markeredgecolor="black", zorder=5, label=label)
        else:
            star = ax.axvline(best["step"], color="tab:red", linestyle=":", label=label)
        handles.append(star)

    for i, step in enumerate(sorted(set(int(s) for s in resumed_at if s))):
        line = ax.axvline(step, color="0.35", linestyle="-.", linewidth=1.2,
                          label=f"resumed at step {step}" if i == 0 else None)
        if i == 0:
            handles.append(line)

    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if lr:
        ax2 = ax.twinx()
        (lr_line,) = ax2.plot(lr_steps, lr, color="tab:green", linestyle="--", linewidth=1.2, label="learning rate")
        ax2.set_ylabel("learning rate", color="tab:green")
        ax2.tick_params(axis="y", colors="tab:green")
        ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}" if v else "0"))
        ax2.set_ylim(bottom=0)
        handles.append(lr_line)
    per_epoch = _steps_per_epoch(history)
    if per_epoch:
        top = ax.secondary_xaxis("top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch))
        top.set_xlabel("epoch")
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not train_loss and not eval_loss:
        ax.text(0.5, 0.5, "no loss logged yet", transform=ax.transAxes, ha="center", va="center", color="0.4")
    if handles:  # below the axes: never over a curve
        fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)), fontsize=9,
                   frameon=False)
    summary = []
    if train_loss:
        summary.append(f"last training loss {train_loss[-1]:.4g}")
    if eval_loss:
        summary.append(f"last validation loss {eval_loss[-1]:.4g} (epoch {eval_epochs[-1]:g})")
    fig.suptitle(title or "training run", fontsize=13, fontweight="bold")
    if summary:
        ax.set_title(", ".join(summary), fontsize=10, color="0.3")
    return fig


def write_loss_plot(history: Sequence[Mapping[str, Any]], path: str | Path, **kwargs) -> Path:
    """Draw :func:`plot_loss` and write it as a PNG (via a temporary name, so a reader never sees half a file)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_loss(history, **kwargs)
    FigureCanvasAgg(fig)
    partial = path.with_name(path.name + ".partial")
    fig.savefig(partial, format="png")
    partial.replace(path)
    return path


def run_title(run_name: str, preset: str | None = None, model: str | None = None) -> str:
    parts = [run_name] + ([f"preset {preset}"] if preset else []) + ([f"model {model}"] if model else [])
    return " · ".join(parts)


class LossPlotCallback(TrainerCallback):
    """Writes ``loss.png`` into ``log_dir`` at the end of training (and of each resumed part); main process only.

    A picture must never fail a run: any error becomes one warning line.
    """

    def __init__(self, log_dir: str | Path, title: str = "", metric: str | None = None,
                 greater_is_better: bool | None = None):
        self.path = Path(log_dir) / PLOT_FILE
        self.title = title
        self.metric = metric
        self.greater_is_better = greater_is_better
        self.resumed_at: list[int] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:  # resumed from a checkpoint: its history is already in state.log_history
            self.resumed_at.append(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if not matplotlib_available():
            logger.warning("%s not written: matplotlib is not installed (%s)", self.path, INSTALL_HINT)
            return
        metric = self.metric or args.metric_for_best_model or "eval_loss"
        metric = metric if metric.startswith("eval_") else f"eval_{metric}"
        greater = self.greater_is_better if self.greater_is_better is not None else bool(args.greater_is_better)
        try:
            write_loss_plot(state.log_history, self.path, title=self.title, metric=metric,
                            greater_is_better=greater, resumed_at=self.resumed_at)
        except Exception as exc:  # noqa: BLE001 - the checkpoints are what matter; say it and go on
            logger.warning("%s not written: %s: %s", self.path, type(exc).__name__, exc)
