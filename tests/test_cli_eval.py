"""theta-eval end to end: train theta-tiny with the real theta-train, then run theta-eval as a subprocess (a
successful run and a one-line error) and, for the other cases, through its ``main()`` in this process (no ~5-8 s
of torch import per case), offline (HF_HUB_OFFLINE=1 and every network connection refused and logged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import NETWORK_GUARD, run_main
from theta_ai.metrics import TEXT_METRIC_KEYS

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent




def _records(n_countries: int) -> list[dict]:
    names = ["France", "Spain", "Italy", "Germany", "Japan", "Egypt", "Peru", "Kenya", "Chile", "Norway", "Greece",
             "Cuba", "Ghana", "Nepal", "Laos", "Oman"]
    cities = ["Paris", "Madrid", "Rome", "Berlin", "Tokyo", "Cairo", "Lima", "Nairobi", "Santiago", "Oslo", "Athens",
              "Havana", "Accra", "Kathmandu", "Vientiane", "Muscat"]
    out = [{"question": f"What is the capital of {c}?", "answer": f"The capital of {c} is {k}.", "domain": "geography"}
           for c, k in list(zip(names, cities))[:n_countries]]
    out += [{"question": f"What is {a} plus {b}?", "answer": f"{a} plus {b} is {a + b}.", "domain": "math"}
            for a in range(2, 2 + n_countries // 2) for b in (3, 4)]
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_eval")
    guard = root / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD)
    log = root / "network.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(guard), THETA_NETWORK_LOG=str(log),
               OMP_NUM_THREADS="1")  # a 1M-parameter model is fastest on one thread, and a busy CPU hurts two
    all_records = _records(16)
    val = all_records[::4]
    train = [r for r in all_records if r not in val]
    (root / "train.json").write_text(json.dumps(train))
    (root / "val.json").write_text(json.dumps(val))

    def theta(tool: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / tool), *args], cwd=root, env=env, capture_output=True, text=True,
                              timeout=timeout)

    trained = theta("theta-train", "--data", "train.json", "--val-data", "val.json", "--model-name", "theta-tiny",
                    "--epochs", "2", "--batch-size", "8", "--grad-accum", "1", "--learning-rate", "3e-3",
                    "--warmup-steps", "2", "--checkpoint-dir", "m", "--logdir", "logs")
    assert trained.returncode == 0, trained.stderr[-3000:]
    def theta_eval(*args: str, capsys) -> subprocess.CompletedProcess:
        """theta-eval's main() in this process, in ``root``, offline and guarded as the subprocesses are."""
        from theta_ai.cli.eval import main

        return run_main(main, *args, capsys=capsys, cwd=root, network_log=log, env={"HF_HUB_OFFLINE": "1"})

    yield type("Run", (), {"root": root, "theta": staticmethod(theta), "eval": staticmethod(theta_eval), "val": val,
                           "train": train, "log": log})
    assert not log.exists(), f"network access attempted: {log.read_text()}"


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("theta-eval: error: ")
    return lines[0]


def test_eval_defaults_to_the_stored_validation_set_and_is_deterministic(run, capsys):
    model = run.root / "m" / "theta_final"
    first = run.theta("theta-eval", "--model-path", str(model), "--max-new-tokens", "24", "--batch-size", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    out = model / "eval"
    results = json.loads((out / "eval_results.json").read_text())
    assert set(TEXT_METRIC_KEYS) | {"perplexity", "answer_tokens"} == set(results["metrics"])
    assert all(isinstance(results["metrics"][k], (int, float)) for k in results["metrics"])
    assert results["num_examples"] == len(run.val)
    assert results["data"] == [str(model / "theta_validation.jsonl")]
    assert results["model_path"] == str(model.resolve())
    assert results["settings"]["template"] == "qa" and results["settings"]["batch_size"] == 3
    assert results["signatures"]["bleu"].startswith("nrefs:1|")
    assert set(results["per_domain"]) == {"geography", "math"}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len(run.val)
    assert [r["question"] for r in rows] == [v["question"] for v in run.val]
    assert all(r["category"] in results["category_precedence"] for r in rows)
    report = (out / "eval_report.md").read_text()
    assert "## Error categories" in report and "## Example responses" in report
    # the summary goes to the terminal (stdout); progress bars and log lines to stderr
    assert "ROUGE-L" in first.stdout and "categories:" in first.stdout and "eval_results.json" in first.stdout
    assert "generating" in first.stderr

    second = run.eval("--model-path", str(model), "--max-new-tokens", "24", "--batch-size", "3", "--output", "again",
                      capsys=capsys)  # a second, separate run: here, in the test process
    assert second.returncode == 0, second.stderr[-3000:]
    assert (run.root / "again" / "predictions.jsonl").read_bytes() == (out / "predictions.jsonl").read_bytes()
    again = json.loads((run.root / "again" / "eval_results.json").read_text())
    assert again["metrics"] == results["metrics"]


def test_eval_epoch_checkpoint_with_data_and_tensorboard(run, capsys):
    model = run.root / "m" / "theta_checkpoint_epoch_1"
    result = run.eval("--model-path", str(model), "--data", "train.json", "val.json", "--num-examples", "2",
                      "--max-new-tokens", "16", "--output", "epoch1", "--logdir", "tb", capsys=capsys)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run.root / "epoch1" / "eval_results.json").read_text())
    assert results["num_examples"] == len(run.train) + len(run.val)
    assert len(results["worst_examples"]) == 2 and len(results["example_responses"]["best"]) == 2
    lines = (run.root / "epoch1" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(run.train) + len(run.val)
    assert list((run.root / "tb").glob("events.out.tfevents.*"))


def test_bad_model_paths_give_one_line(run, capsys):
    missing = _one_line_error(run.theta("theta-eval", "--model-path", "no/such/folder"))  # the real command
    assert "does not exist" in missing
    (run.root / "empty").mkdir()
    empty = _one_line_error(run.eval("--model-path", "empty", capsys=capsys))
    assert "holds no model" in empty
    parent = _one_line_error(run.eval("--model-path", "m", capsys=capsys))
    assert "theta_best" in parent  # the hint names the model folders inside
    (run.root / "broken").mkdir()
    (run.root / "broken" / "config.json").write_text("{ not json")
    assert "broken" in _one_line_error(run.eval("--model-path", "broken", "--data", "val.json", capsys=capsys))


def test_bad_data_gives_the_same_error_as_theta_train(run, capsys):
    from theta_ai.data import DataError, load_examples

    bad = run.root / "bad.jsonl"
    bad.write_text('{"question": "q?", "answer": "a."}\n{"question": "q2?", "answer": ""}\n')
    with pytest.raises(DataError) as expected:
        load_examples([str(bad)])
    line = _one_line_error(run.eval("--model-path", "m/theta_final", "--data", str(bad), capsys=capsys))
    assert line == f"theta-eval: error: {expected.value}"
    assert 'line 2, field "answer"' in line


def test_sample_data_paths_work_as_in_theta_train(run, capsys):
    """--data sample:NAME: the data bundled in the package, as theta-train reads it (it was "does not exist")."""
    result = run.eval("--model-path", "m/theta_final", "--data", "sample:theta_sample_val.json", "--max-examples", "3",
                      "--max-new-tokens", "4", "--output", "sample_eval", capsys=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((run.root / "sample_eval" / "eval_results.json").read_text())["num_examples"] == 3
    unknown = _one_line_error(run.eval("--model-path", "m/theta_final", "--data", "sample:nope.json", capsys=capsys))
    assert unknown.startswith("theta-eval: error: --data: ") and "theta_sample_val.json" in unknown


def test_usage_errors(run, capsys):
    result = run.eval("--model-path", "m/theta_final", "--bach-size", "4", capsys=capsys)
    assert result.returncode == 2 and "did you mean --batch-size" in result.stderr
    result = run.eval("--model-path", "m/theta_final", "--max-new-tokens", "0", capsys=capsys)
    assert result.returncode == 2 and "must be at least 1" in result.stderr
    result = run.eval("--help", capsys=capsys)
    assert result.returncode == 0 and "--model-path" in result.stdout and "--max-new-tokens" in result.stdout


def test_field_and_role_maps_read_other_layouts_as_in_theta_train(run, capsys):
    """--field-map / --role-map: a file whose turns lie under "exchanges" with a "bot" role evaluates as it trains."""
    dialogues = [{"title": f"t{i}", "exchanges": [{"role": "user", "content": v["question"]},
                                                  {"role": "bot", "content": v["answer"]}]} for i, v in enumerate(run.val)]
    (run.root / "dialogues.json").write_text(json.dumps(dialogues))
    result = run.eval("--model-path", "m/theta_final", "--data", "dialogues.json", "--field-map",
                      "conversations=exchanges", "--role-map", "bot=assistant", "--max-new-tokens", "4", "--output",
                      "mapped", capsys=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (run.root / "mapped" / "predictions.jsonl").read_text().splitlines()]
    assert [(r["question"], r["reference"]) for r in rows] == [(v["question"], v["answer"]) for v in run.val]
    bad = _one_line_error(run.eval("--model-path", "m/theta_final", "--data", "dialogues.json", "--role-map",
                                   "assistant=bot", capsys=capsys))
    assert bad == ("theta-eval: error: --role-map 'assistant=bot': 'bot' is not a theta role (the right side is one "
                   "of system, user, assistant: FILE=THETA); write it the other way round: bot=assistant")
