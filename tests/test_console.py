"""What a newcomer sees: the console of real theta-train / theta-eval runs (subprocesses, the quick-start preset).

The quiet console keeps theta_ai's banner, epoch lines and every ``warning:`` line, one progress bar, and
drops Trainer's raw log dictionaries (they go to train.log), the nested evaluation bar, the library bars and
the known-harmless library messages; ``--verbose`` brings them back.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RAW_DICT = re.compile(r"\{'(loss|eval_loss|train_runtime|grad_norm)': ")
NOISE = ["Token indices sequence length is longer than the specified maximum sequence length",
         "is_gradient_checkpointing", "loss_type=None", "Writing model shards", "Loading weights"]
BAR = re.compile(r"\d+/\d+ \[")


def run(args: list[str], cwd: Path, module: str = "theta_ai.cli.train") -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    console = (proc.stdout + proc.stderr).replace("\r", "\n")
    assert proc.returncode == 0, console[-3000:]
    return console


def sample_subset(name: str, count: int, path: Path) -> Path:
    """The first ``count`` records of the shipped sample file ``name``: the quick start's data, fewer steps."""
    from theta_ai import sample_path

    records = json.loads(sample_path(name).read_text(encoding="utf-8"))
    path.write_text(json.dumps(records[:count]), encoding="utf-8")
    return path


def long_example(path: Path) -> Path:
    """One answer far over the model's 512 positions: transformers' tokenizer warns, theta_ai counts the cut."""
    rng = random.Random(0)
    words = "router switch packet kernel cache thread socket disk compiler firewall memory process".split()
    answer = " ".join(f"{rng.choice(words)}{i % 97}" for i in range(900))
    path.write_text(json.dumps([{"question": "Explain everything about networks?", "answer": answer}]),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    # 24 + 1 training examples: 7 steps per epoch at the preset's batch 4, so a loss is logged every 2 steps
    train = sample_subset("theta_sample_train.json", 24, tmp / "train.json")
    small = ["--data", str(train), "--val-data", str(sample_subset("theta_sample_val.json", 12, tmp / "val.json")),
             "--logging-steps", "2"]
    data = [*small, "--data", str(long_example(tmp / "long.json"))]
    quiet = run(["--preset", "cpu-quickstart", "--epochs", "2", "--precision", "fp16", *data], tmp)
    # LoRA: peft reads transformers' deprecated is_gradient_checkpointing (a FutureWarning), in training and eval
    loud = run(["--preset", "cpu-quickstart", "--epochs", "1", "--lora", "--checkpoint-dir", "lora", "--verbose",
                "--logdir", "lora_logs", *small], tmp)
    model = str(tmp / "lora" / "theta_best")
    eval_quiet = run(["--model-path", model, "--max-examples", "8"], tmp, "theta_ai.cli.eval")
    eval_loud = run(["--model-path", model, "--max-examples", "8", "--verbose"], tmp, "theta_ai.cli.eval")
    return tmp, quiet, loud, eval_quiet, eval_loud


def test_quiet_training_console_keeps_what_matters(runs):
    tmp, quiet, _, _, _ = runs
    assert not RAW_DICT.search(quiet), [line for line in quiet.splitlines() if RAW_DICT.search(line)][:3]
    for message in NOISE:
        assert message not in quiet, message
    # the banner, one line per epoch, the end line
    assert "[theta] theta-train: preset cpu-quickstart, model theta-tiny" in quiet
    assert re.search(r"\[theta\] effective batch \d+ = \d+ per device x \d+ accumulation x 1 process\(es\)", quiet)
    assert re.search(r"\[theta\] epoch 1: train loss \d+\.\d+, validation loss \d+\.\d+", quiet)
    assert re.search(r"\[theta\] epoch 2: train loss \d+\.\d+, validation loss \d+\.\d+", quiet)
    # the per-epoch ROUGE-L says it scores the callback's fixed subset (8 of the 12 validation questions here)
    assert re.search(r"\[theta\] epoch 2: .*, ROUGE-L on 8 answers \d\.\d{4}", quiet)
    # a new best is said on the epoch line itself (the first epoch always is one), not on a line of its own
    assert re.search(r"\[theta\] epoch 1: .*, new best\n", quiet) and "new best model" not in quiet
    assert "[theta] done: 2 epoch checkpoint(s)" in quiet
    # every theta_ai warning: the precision note and the truncation count (the tokenizer's own warning is gone)
    assert "[theta] warning: precision fp16: fp16 mixed precision needs a CUDA GPU" in quiet
    assert "[theta] warning: training data: 1 example(s) were longer than --max-seq-length 256 tokens" in quiet
    # one progress bar (training), none for evaluation or saving; loss, lr and tokens/s in its postfix
    bars = [line for line in quiet.splitlines() if BAR.search(line)]
    assert bars and all(line.startswith("training:") for line in bars), [b for b in bars if "training:" not in b][:3]
    assert re.search(r"loss=\d+\.\d+, lr=[\d.e-]+, tok/s=[\d,]+", quiet)


def test_raw_dictionaries_go_to_train_log(runs):
    tmp = runs[0]
    (log,) = (tmp / "logs").glob("cpu-quickstart-*/train.log")
    text = log.read_text(encoding="utf-8")
    assert "theta_ai.trainer_logs INFO {'loss': " in text and "{'eval_loss': " in text
    assert "{'train_runtime': " in text
    assert "theta_ai.trainer_logs INFO new best model: epoch 1, eval_loss " in text


def test_verbose_brings_the_dictionaries_and_library_messages_back(runs):
    _, _, loud, _, _ = runs
    assert "{'loss': " in loud and "{'eval_loss': " in loud
    assert "`is_gradient_checkpointing` is deprecated" in loud
    assert re.search(r"\[theta\] epoch 1: train loss", loud)


def test_eval_console(runs):
    tmp, _, _, quiet, loud = runs
    for message in NOISE:
        assert message not in quiet, message
    assert "theta-eval: 8 examples" in quiet and "exact match" in quiet and "wrote " in quiet
    assert "training curves of this model: " in quiet and "loss.png" in quiet
    assert "Loading weights" in loud and "`is_gradient_checkpointing` is deprecated" in loud
    assert "theta-eval: 8 examples" in loud
    # eval_report.md shows the loss plot of the run that trained the model
    (plot,) = (tmp / "lora_logs").glob("cpu-quickstart-*/loss.png")
    report = (tmp / "lora" / "theta_best" / "eval" / "eval_report.md").read_text(encoding="utf-8")
    report_dir = (tmp / "lora" / "theta_best" / "eval").resolve()
    relative = os.path.relpath(plot.resolve(), report_dir)  # the report folder can move with its run folder
    assert relative.startswith("..") and f"![training and validation loss](<{relative}>)" in report
    assert f"training curves of this model: {plot.resolve()}" in quiet


def test_a_new_library_warning_still_shows(tmp_path):
    """The filters match exact messages: any other warning, from Python or a library logger, reaches the console."""
    code = """
import logging, warnings
from pathlib import Path
from theta_ai.cli.common import attach_log_file, configure_console, setup_logging
setup_logging(); configure_console(False); attach_log_file(Path("run/train.log"))
import transformers.utils.logging as hf
tok = hf.get_logger("transformers.tokenization_utils_base")
tok.warning("Token indices sequence length is longer than the specified maximum sequence length for this model "
            "(900 > 512). Running this sequence through the model will result in indexing errors")
tok.warning("Token indices sequence length is something new")
hf.get_logger("transformers.trainer").warning("a brand-new trainer warning")
warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing` "
              "instead.", FutureWarning)
warnings.warn("a brand-new FutureWarning", FutureWarning)
logging.getLogger("theta_ai").warning("a theta_ai warning")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    console = proc.stderr
    assert "(900 > 512)" not in console and "is_gradient_checkpointing" not in console
    assert "Token indices sequence length is something new" in console
    assert "a brand-new trainer warning" in console
    assert "FutureWarning: a brand-new FutureWarning" in console
    assert "[theta] warning: a theta_ai warning" in console
    log = (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    assert "a brand-new FutureWarning" in log and "a theta_ai warning" in log


def test_merge_lora_console_is_as_quiet_as_training(runs):
    """--merge-lora returned before the console was set up: peft's harmless FutureWarning and the library's
    "Loading weights" bars reached the console there."""
    tmp = runs[0]
    console = run(["--merge-lora", str(tmp / "lora" / "theta_best"), "--output", str(tmp / "merged")], tmp)
    for message in NOISE:
        assert message not in console, (message, console[-2000:])
    assert (tmp / "merged" / "model.safetensors").is_file()
