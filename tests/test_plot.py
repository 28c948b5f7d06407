"""loss.png: written at the end of every training run (and rewritten by a resumed part), and what it draws."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from theta_ai.config import resolve_config  # noqa: E402
from theta_ai.eval.report import training_plot  # noqa: E402
from theta_ai.monitoring import plot as plot_module  # noqa: E402
from theta_ai.monitoring.plot import PLOT_FILE, best_evaluation, plot_loss  # noqa: E402
from theta_ai.training.run import prepare_run, train  # noqa: E402
from theta_fixtures import tiny_train_config  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def lines_by_label(fig) -> dict:
    return {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plot")
    result = train(resolve_config(tiny_train_config(tmp)))
    return tmp, result


def test_training_writes_loss_png_in_its_log_folder(two_epoch_run):
    tmp, result = two_epoch_run
    path = result.log_dir / PLOT_FILE
    width, height = png_size(path)
    assert (width, height) == (1100, 616)  # 10 x 5.6 inches at 110 dpi
    assert path.stat().st_size > 20_000  # curves, legend and text, not an empty canvas
    info = json.loads((result.best_dir / "theta_run.json").read_text())
    assert Path(info["loss_plot"]) == path.resolve()
    # theta-eval's report finds it through theta_run.json
    assert training_plot({"run_info": info, "model_path": str(result.best_dir)}) == path.resolve()
    # an old checkpoint records only a log_dir relative to where theta-train ran: found from the model's folders
    old = {"log_dir": str(result.log_dir.relative_to(tmp))}
    assert training_plot({"run_info": old, "model_path": str(result.best_dir.resolve())}) == path.resolve()
    assert training_plot({"run_info": {}, "model_path": str(result.best_dir)}) is None


def test_a_resumed_run_rewrites_loss_png_with_both_parts(two_epoch_run, tmp_path, monkeypatch):
    full_tmp, full = two_epoch_run
    path = full.log_dir / PLOT_FILE
    before = path.read_bytes()
    drawn = []
    real = plot_module.plot_loss

    def spy(history, **kwargs):
        drawn.append((list(history), kwargs))
        return real(history, **kwargs)

    monkeypatch.setattr(plot_module, "plot_loss", spy)
    # the interrupted run: only epoch 1 was completed; its checkpoint names the first run's log folder
    shutil.copytree(full_tmp / "models" / "theta_checkpoint_epoch_1", tmp_path / "models" / "theta_checkpoint_epoch_1")
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, resume="auto")))
    assert run.log_dir == full.log_dir
    result = train(run.cfg, prepared=run)
    assert result.log_dir == full.log_dir
    assert path.read_bytes() != before and png_size(path) == (1100, 616)
    (history, kwargs), = drawn
    per_epoch = run.steps_per_epoch
    assert kwargs["resumed_at"] == [per_epoch]
    loss_steps = [e["step"] for e in history if "loss" in e]
    assert min(loss_steps) <= per_epoch < max(loss_steps)  # part one (from the checkpoint) and part two
    assert [e["epoch"] for e in history if "eval_loss" in e] == [1.0, 2.0]


def synthetic_history() -> list[dict]:
    history = []
    for step in range(1, 21):
        history.append({"step": step, "epoch": step / 10, "loss": 5.0 - 0.1 * step, "learning_rate": 1e-3 * step / 20,
                        "grad_norm": 1.0})
        if step % 10 == 0:
            history.append({"step": step, "epoch": step / 10, "eval_loss": {10: 4.0, 20: 4.2}[step],
                            "eval_rougeL": {10: 0.1, 20: 0.3}[step]})
    history.append({"step": 20, "epoch": 2.0, "train_runtime": 3.0, "train_loss": 4.0})
    return history


def test_plot_draws_the_expected_series():
    history = synthetic_history()
    fig = plot_loss(history, title="run-1 · preset cpu-quickstart", resumed_at=[10])
    lines = lines_by_label(fig)
    train_line = lines["training loss"]
    assert list(train_line.get_xdata()) == list(range(1, 21))
    assert list(train_line.get_ydata()) == pytest.approx([5.0 - 0.1 * s for s in range(1, 21)])
    smoothed = lines["training loss (smoothed)"].get_ydata()
    assert list(smoothed) == pytest.approx(list(train_line.get_ydata()))  # centred: no lag on a straight line
    val = lines["validation loss"]
    assert list(val.get_xdata()) == [10, 20] and list(val.get_ydata()) == [4.0, 4.2]
    lr = lines["learning rate"]
    assert lr.axes is not train_line.axes  # the second y axis
    assert list(lr.get_ydata()) == pytest.approx([1e-3 * s / 20 for s in range(1, 21)])
    (best,) = [line for label, line in lines.items() if label.startswith("best:")]
    assert list(best.get_xdata()) == [10] and list(best.get_ydata()) == [4.0]
    assert "epoch 1" in best.get_label() and "eval_loss 4" in best.get_label()
    assert "resumed at step 10" in lines
    assert fig._suptitle.get_text() == "run-1 · preset cpu-quickstart"
    epoch_axis = [a for a in fig.axes[0].child_axes if a.get_xlabel() == "epoch"]
    assert epoch_axis  # the epochs on a second x axis


def test_smoothing_is_centred():
    noisy = [10.0 - 0.01 * i + (0.5 if i % 2 else -0.5) for i in range(300)]
    smoothed = plot_module.smooth(noisy)
    assert smoothed[0] == noisy[0] and smoothed[-1] == noisy[-1]
    middle = smoothed[20:280]
    assert max(abs(s - (10.0 - 0.01 * i)) for i, s in enumerate(middle, 20)) < 0.05  # on the trend, no lag


def test_best_follows_metric_for_best_model():
    history = synthetic_history()
    assert best_evaluation(history)["step"] == 10
    assert best_evaluation(history, "eval_rougeL", greater_is_better=True)["step"] == 20
    fig = plot_loss(history, metric="eval_rougeL", greater_is_better=True)
    (best,) = [line for label, line in lines_by_label(fig).items() if label.startswith("best:")]
    assert list(best.get_xdata()) == [20] and list(best.get_ydata()) == [4.2]  # marked on the validation loss


def test_empty_history_still_draws():
    fig = plot_loss([], title="nothing yet")
    assert not [line for line in lines_by_label(fig) if line.startswith("training")]


def test_without_matplotlib_one_line_says_so(tmp_path, monkeypatch):
    import logging
    from types import SimpleNamespace

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("theta_ai").addHandler(handler)
    monkeypatch.setattr(plot_module, "matplotlib_available", lambda: False)
    try:
        callback = plot_module.LossPlotCallback(tmp_path, "run")
        callback.on_train_end(SimpleNamespace(metric_for_best_model="eval_loss", greater_is_better=False),
                              SimpleNamespace(is_world_process_zero=True, log_history=[]), None)
    finally:
        logging.getLogger("theta_ai").removeHandler(handler)
    (record,) = records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f'{tmp_path / PLOT_FILE} not written: matplotlib is not installed (pip install "theta_ai[plot]")'
    assert not (tmp_path / PLOT_FILE).exists()
