"""The installed wheel runs its own quick start, and ``sample:NAME`` data paths resolve from any folder.

The end-to-end test builds the wheel, installs it (not editable) into a fresh virtual environment
that borrows torch/transformers from this one through a ``.pth`` file, and runs
``theta-train --preset cpu-quickstart`` and ``theta-eval`` from an empty folder.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import theta_ai
from theta_ai.cli.train import parse
from theta_ai.config import ConfigError, resolve_config
from theta_ai.config.samples import resolve_sample_paths, sample_dir, sample_names, sample_path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ["theta_sample_conversations.jsonl", "theta_sample_train.json", "theta_sample_val.json"]
UNKNOWN_SAMPLE = ("unknown sample data 'theta_sample_trian.json'; did you mean 'theta_sample_train.json'? "
                  "(sample data: theta_sample_conversations.jsonl, theta_sample_train.json, theta_sample_val.json)")


# ---- sample: paths (fast)


def test_sample_data_lies_inside_the_package():
    assert sample_names() == SAMPLES
    assert sample_dir() == Path(theta_ai.__file__).parent / "resources" / "sample_data"
    assert sample_path("sample:theta_sample_val.json") == sample_path("theta_sample_val.json")
    assert sample_path("theta_sample_val.json").is_file()


def test_cpu_quickstart_finds_its_data_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config(preset="cpu-quickstart")
    assert cfg.data == [str(sample_path("theta_sample_train.json"))]
    assert cfg.val_data == [str(sample_path("theta_sample_val.json"))]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in cfg.data + cfg.val_data)
    assert cfg.sources["data"] == "preset cpu-quickstart"
    from theta_ai.data import load_examples

    assert len(load_examples(cfg.val_data).examples) == 60


def test_sample_paths_from_the_command_line_and_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.json").write_text("[]")
    values = vars(parse(["--data", "sample:theta_sample_conversations.jsonl", "--data", "mine.json",
                         "--val-data", "sample:theta_sample_val.json"]))
    cfg = resolve_config(values)
    assert cfg.data == [str(sample_path("theta_sample_conversations.jsonl")), "mine.json"]  # others untouched
    assert cfg.val_data == [str(sample_path("theta_sample_val.json"))]
    (tmp_path / "run.yaml").write_text("preset: cpu-quickstart\ndata: sample:theta_sample_conversations.jsonl\n")
    cfg = resolve_config(config_file="run.yaml")
    assert cfg.data == [str(sample_path("theta_sample_conversations.jsonl"))]
    assert cfg.val_data == [str(sample_path("theta_sample_val.json"))]  # from the preset


def test_unknown_sample_name_lists_the_available_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve_config({"data": ["sample:theta_sample_trian.json"]})
    assert str(err.value) == f"--data (from command line): {UNKNOWN_SAMPLE}"
    (tmp_path / "run.yaml").write_text("val_data: [sample:theta_sample_trian.json]\n")
    with pytest.raises(ConfigError) as err:
        resolve_config(config_file=str(tmp_path / "run.yaml"))
    assert str(err.value) == f"--val-data (from config {tmp_path / 'run.yaml'}): {UNKNOWN_SAMPLE}"
    with pytest.raises(ConfigError) as err:
        sample_path("theta_sample_trian.json")
    assert str(err.value) == UNKNOWN_SAMPLE
    assert resolve_sample_paths(["data/", "x.json"]) == ["data/", "x.json"]
    assert resolve_sample_paths([]) == [] and resolve_sample_paths(None) is None


# ---- the wheel, installed into a fresh venv, runs the quick start from an empty folder


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n" \
                                 f"--- stderr\n{proc.stderr[-6000:]}"
    return proc


def _build_wheel(tmp: Path) -> Path:
    """Build from a copy of the checkout's project files: an in-place build would write build/ and
    src/*.egg-info into the shared checkout, and a stale build/lib could smuggle deleted files into the wheel."""
    project = tmp / "project"
    project.mkdir()
    for name in ["pyproject.toml", "README.md", *(p.name for p in ROOT.glob("LICEN[CS]E*"))]:
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp / "dist", project], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("theta_ai-*.whl")
    return wheel


def _dependency_site_dirs() -> list[str]:
    """Where this environment's packages live (torch, transformers, ...), for the fresh venv's .pth file."""
    paths = sysconfig.get_paths()
    dirs = [paths["purelib"], paths["platlib"]]
    for module in ("torch", "transformers", "accelerate", "datasets", "evaluate", "yaml", "safetensors"):
        spec = importlib.util.find_spec(module)
        if spec and spec.origin:
            dirs.append(str(Path(spec.origin).parents[1]))
    return list(dict.fromkeys(dirs))


def _fresh_venv(tmp: Path, wheel: Path) -> tuple[Path, Path]:
    """A new venv with the wheel installed (no deps) and this environment's site-packages behind its own."""
    venv = tmp / "venv"
    pip_version = tuple(int(x) for x in importlib.metadata.version("pip").split(".")[:2])
    use_outer_pip = pip_version >= (22, 3)  # pip --python: no ensurepip in the new venv (seconds saved)
    _run([sys.executable, "-m", "venv", *(["--without-pip"] if use_outer_pip else []), venv], cwd=tmp)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    install = ["install", "--no-deps", "--no-index", "--no-warn-script-location", "-q", wheel]
    # Installed before the .pth exists, so pip never sees the outer environment's theta_ai.
    if use_outer_pip:
        _run([sys.executable, "-m", "pip", "--python", python, *install], cwd=tmp)
    else:
        _run([python, "-m", "pip", *install], cwd=tmp)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip())
    # Plain path lines: the outer site-packages joins sys.path *after* the venv's own, and its .pth files
    # (the editable install's __editable__.theta_ai-*.pth -> src/) are not processed.
    (site / "_outer_env.pth").write_text("\n".join(_dependency_site_dirs()) + "\n")
    return python, bindir


def test_installed_wheel_runs_the_quick_start_from_an_empty_folder(tmp_path):
    wheel = _build_wheel(tmp_path)
    assert wheel.name == f"theta_ai-{theta_ai.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src" / "theta_ai").rglob("*.py")
              if "__pycache__" not in p.parts}
    data = {f"theta_ai/resources/sample_data/{n}" for n in SAMPLES} | {
        "theta_ai/resources/theta_tiny_config.json", "theta_ai/resources/augment_synonyms.json",
        "theta_ai/metrics/theta_qa/theta_qa.py", "theta_ai/metrics/theta_rouge/theta_rouge.py",
        "theta_ai/metrics/theta_sacrebleu/theta_sacrebleu.py"}
    assert data <= names and source <= names, sorted((data | source) - names)
    assert {n.split("/")[0] for n in names} == {"theta_ai", f"theta_ai-{theta_ai.__version__}.dist-info"}
    entry_points = zipfile.ZipFile(wheel).read(f"theta_ai-{theta_ai.__version__}.dist-info/entry_points.txt").decode()
    assert "theta-train = theta_ai.cli.train:main" in entry_points and "theta-eval = theta_ai.cli.eval:main" in entry_points

    python, bindir = _fresh_venv(tmp_path, wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}")
    # Two intra-op threads on a 2-core machine shared with other jobs run ~15x slower than one.
    env.setdefault("OMP_NUM_THREADS", "1")
    work = tmp_path / "work"
    work.mkdir()
    probe = _run([python, "-c", "import theta_ai, theta_ai.config.samples as s; print(theta_ai.__file__); "
                  "print(s.sample_path('theta_sample_train.json'))"], cwd=work, env=env).stdout.split("\n")
    venv = python.parent.parent.resolve()
    for line in probe[:2]:  # the wheel's copy, not src/ of the checkout through the editable install
        assert Path(line).resolve().is_relative_to(venv), probe
        assert not Path(line).resolve().is_relative_to(ROOT / "src"), probe

    train = _run([bindir / "theta-train", "--preset", "cpu-quickstart", "--epochs", "2"], cwd=work, env=env)
    log = train.stdout + train.stderr
    assert "does not exist" not in log
    assert "[theta] theta-train: preset cpu-quickstart, model theta-tiny" in log
    assert "[theta] examples: 336 train, 60 validation; 84 optimizer steps per epoch, 2 epochs" in log
    assert ("[theta] done: 2 epoch checkpoint(s) in models/quickstart, best model models/quickstart/theta_best, "
            "final model models/quickstart/theta_final") in log
    assert sorted(p.name for p in work.iterdir()) == ["logs", "models"]  # nothing written anywhere else in cwd
    models = work / "models" / "quickstart"
    assert sorted(p.name for p in models.iterdir()) == [
        "theta_best", "theta_checkpoint_epoch_1", "theta_checkpoint_epoch_2", "theta_final"]
    for folder in ("theta_best", "theta_final"):
        assert (models / folder / "model.safetensors").is_file() and (models / folder / "config.json").is_file()
    best = json.loads((models / "theta_best" / "theta_best.json").read_text())
    assert best["epoch"] == 2 and best["value"] < 6.6  # the validation loss falls from ~6.6
    run_info = json.loads((models / "theta_best" / "theta_run.json").read_text())
    assert [Path(p).name for p in run_info["data"] + run_info["val_data"]] == [
        "theta_sample_train.json", "theta_sample_val.json"]
    assert all(Path(p).resolve().is_relative_to(venv) for p in run_info["data"] + run_info["val_data"])

    evaluate = _run([bindir / "theta-eval", "--model-path", "models/quickstart/theta_best"], cwd=work, env=env)
    assert evaluate.stdout.startswith(f"theta-eval: 60 examples, model {models.resolve() / 'theta_best'}\n"), \
        evaluate.stdout[:500]
    assert ("wrote models/quickstart/theta_best/eval/eval_results.json, predictions.jsonl, eval_report.md"
            in evaluate.stdout)
    out = models / "theta_best" / "eval"
    assert sorted(p.name for p in out.iterdir()) == ["eval_report.md", "eval_results.json", "predictions.jsonl"]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["num_examples"] == 60
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 60

    # theta-chat from the wheel answers a validation question as theta-eval did (same prompt, same stop rules)
    assert "theta-chat = theta_ai.cli.chat:main" in entry_points
    first = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    chat = _run([bindir / "theta-chat", "--model-path", "models/quickstart/theta_best", "--prompt", first["question"],
                 "--max-new-tokens", "128"], cwd=work, env=env)
    assert chat.stdout == f"{first['prediction']}\n", (chat.stdout, first)
