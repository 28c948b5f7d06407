"""--report-to: TensorBoard by default, MLflow (and W&B) through Trainer's callbacks, theta_ai's own scalars to each."""

from __future__ import annotations

import importlib.util

import pytest

from theta_ai.config import ConfigError, resolve_config
from theta_ai.monitoring.trackers import run_trackers
from theta_ai.training.run import train
from theta_fixtures import tiny_train_config


def test_the_tracker_list_is_normalised_and_checked():
    assert resolve_config({}).report_to == "tensorboard"
    assert resolve_config({"report_to": " MLflow, tensorboard,mlflow"}).report_to == "mlflow,tensorboard"
    assert run_trackers("mlflow,tensorboard") == (True, ["mlflow"])
    assert run_trackers("none") == (False, [])
    with pytest.raises(ConfigError, match=r"report_to = 'tensorbord' is not a valid tracker list \(expected "
                                          r"tensorboard, wandb, mlflow \(comma-separated\) or none"):
        resolve_config({"report_to": "tensorbord"})


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_missing_tracker_package_is_one_line_naming_the_extra():
    with pytest.raises(ConfigError) as err:
        resolve_config({"report_to": "tensorboard,wandb"})
    assert str(err.value) == ('--report-to wandb needs the wandb package, which is not installed: '
                              'pip install "theta_ai[wandb]" (or --report-to tensorboard, which works offline)')


def _event_tags(log_dir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed (the test extra has it)")
def test_mlflow_gets_trainer_metrics_and_theta_scalars_beside_tensorboard(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "theta-test")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a plain folder store: no database needed
    result = train(resolve_config(tiny_train_config(tmp_path, epochs=2.0, report_to="tensorboard,mlflow",
                                                    grad_log_steps=2, generation_eval=2)))
    assert mlflow.active_run() is None  # Trainer's callback ended its run
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("theta-test").experiment_id])
    assert run.info.run_name == result.log_dir.name
    metrics = set(run.data.metrics)
    assert {"loss", "eval_loss", "learning_rate"} <= metrics  # Trainer's own logs
    theta = {"grad_norm_total", "grad_norm_embeddings", "throughput_tokens_per_second", "eval_rougeL"}
    assert theta <= metrics  # theta_ai's scalars, at the same steps
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "grad_norm_total")]
    assert steps == sorted(steps) and steps[0] == 2
    tags = _event_tags(result.log_dir)
    assert {"train/loss", "grad_norm/total", "throughput/tokens_per_second", "eval/rougeL"} <= tags


def test_report_to_none_writes_no_event_file_but_keeps_the_plot(tmp_path):
    result = train(resolve_config(tiny_train_config(tmp_path, epochs=1.0, report_to="none", generation_eval=0)))
    assert not list(result.log_dir.glob("events.out.tfevents.*"))
    assert (result.log_dir / "loss.png").is_file() or importlib.util.find_spec("matplotlib") is None
    assert result.best_dir is not None and (result.best_dir / "model.safetensors").is_file()
