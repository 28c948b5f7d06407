"""End-to-end theta-train runs on CPU with theta-tiny: checkpoints, best, final, fine-tune, resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_runner import run_main
from theta_ai.config import ConfigError, resolve_config
from theta_ai.training.run import prepare_run, train
from theta_fixtures import build_tiny_llama, qa_records, tiny_train_config, write_json

CHECKPOINT_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                    "tokenizer_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
                    "training_args.bin", "theta_run.json", "theta_validation.jsonl"}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cfg = resolve_config(tiny_train_config(tmp))
    result = train(cfg)
    return tmp, result


def test_two_epochs_write_every_folder(two_epoch_run):
    tmp, result = two_epoch_run
    models = tmp / "models"
    assert sorted(p.name for p in models.iterdir()) == [
        "theta_best", "theta_checkpoint_epoch_1", "theta_checkpoint_epoch_2", "theta_final"]
    for epoch in (1, 2):
        folder = models / f"theta_checkpoint_epoch_{epoch}"
        assert CHECKPOINT_FILES <= {p.name for p in folder.iterdir()}
        state = json.loads((folder / "trainer_state.json").read_text())
        assert round(state["epoch"]) == epoch
        assert [round(h["epoch"]) for h in state["log_history"] if "eval_loss" in h] == list(range(1, epoch + 1))
        assert json.loads((folder / "theta_run.json").read_text())["template"] == "qa"
    assert result.checkpoints == [models / "theta_checkpoint_epoch_1", models / "theta_checkpoint_epoch_2"]


def test_best_model_is_the_lowest_validation_loss(two_epoch_run):
    tmp, _ = two_epoch_run
    models = tmp / "models"
    state = json.loads((models / "theta_checkpoint_epoch_2" / "trainer_state.json").read_text())
    evals = {round(h["epoch"]): h["eval_loss"] for h in state["log_history"] if "eval_loss" in h}
    best_epoch = min(evals, key=evals.get)
    info = json.loads((models / "theta_best" / "theta_best.json").read_text())
    assert info["epoch"] == best_epoch and info["value"] == pytest.approx(evals[best_epoch])
    assert info["metric"] == "eval_loss" and info["checkpoint"] == f"theta_checkpoint_epoch_{best_epoch}"
    assert same_weights(models / "theta_best", models / f"theta_checkpoint_epoch_{best_epoch}")
    assert same_weights(models / "theta_final", models / "theta_checkpoint_epoch_2")
    assert evals[2] < evals[1]  # the validation loss falls


def test_checkpoint_reloads_with_plain_transformers_and_generates(two_epoch_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = two_epoch_run[0] / "models" / "theta_checkpoint_epoch_1"
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tok("Question: What does the router number 3 do?\nAnswer:", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0]), str)


def test_tensorboard_events_are_written(two_epoch_run):
    tmp, result = two_epoch_run
    assert result.log_dir.parent == tmp / "logs" and result.log_dir.name.startswith("rtx3060-")
    assert list(result.log_dir.glob("events.out.tfevents.*"))


def test_resume_auto_matches_an_uninterrupted_run(two_epoch_run, tmp_path):
    full_tmp, _ = two_epoch_run
    values = tiny_train_config(tmp_path, resume="auto")
    # the interrupted run: only epoch 1 was completed before the "crash"
    shutil.copytree(full_tmp / "models" / "theta_checkpoint_epoch_1", tmp_path / "models" / "theta_checkpoint_epoch_1")
    run = prepare_run(resolve_config(values))
    assert run.resume_from == tmp_path / "models" / "theta_checkpoint_epoch_1"
    result = train(run.cfg, prepared=run)
    assert same_weights(result.final_dir, full_tmp / "models" / "theta_final")
    a = json.loads((tmp_path / "models" / "theta_checkpoint_epoch_2" / "trainer_state.json").read_text())
    b = json.loads((full_tmp / "models" / "theta_checkpoint_epoch_2" / "trainer_state.json").read_text())
    assert a["global_step"] == b["global_step"] and a["best_metric"] == b["best_metric"]


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path):
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, resume="auto")))
    assert run.resume_from is None
    assert f"--resume auto: no complete checkpoint in {tmp_path / 'models'}/, starting a fresh run" in run.notes


def test_existing_checkpoints_are_never_mixed_with_a_new_run(two_epoch_run):
    tmp, _ = two_epoch_run
    with pytest.raises(ConfigError, match=r"already holds checkpoints of an earlier run \(newest: "
                                          r"theta_checkpoint_epoch_2\). Continue it with --resume auto"):
        prepare_run(resolve_config(tiny_train_config(tmp)))


def test_load_checkpoint_starts_a_fresh_run_from_its_weights(two_epoch_run, tmp_path):
    tmp, _ = two_epoch_run
    source = tmp / "models" / "theta_checkpoint_epoch_1"
    values = tiny_train_config(tmp_path, n=16, load_checkpoint=str(source), epochs=1.0)
    run = prepare_run(resolve_config(values))
    loaded = run.loaded.model.state_dict()
    for key, tensor in weights(source).items():
        assert torch.equal(loaded[key], tensor), key
    result = train(run.cfg, prepared=run)
    state = json.loads((result.checkpoints[0] / "trainer_state.json").read_text())
    assert result.checkpoints[0].name == "theta_checkpoint_epoch_1"
    assert run.steps_per_epoch == 2 and state["global_step"] == 2  # a fresh schedule, not step 6 + 2
    assert not same_weights(result.final_dir, source)


def test_load_checkpoint_into_a_folder_with_another_run_moves_aside(two_epoch_run):
    tmp, _ = two_epoch_run
    values = tiny_train_config(tmp, load_checkpoint=str(tmp / "models" / "theta_checkpoint_epoch_2"))
    del values["checkpoint_dir"]
    cfg = resolve_config(values)
    cfg.values["checkpoint_dir"] = str(tmp / "models")  # the default folder, not chosen by the user
    run = prepare_run(cfg)
    assert run.checkpoint_dir == tmp / "models" / "finetune_from_theta_checkpoint_epoch_2"
    assert any("lies in the checkpoint folder" in note and "this fine-tuning run writes to" in note for note in run.notes)


def test_save_total_limit_keeps_the_best(tmp_path):
    values = tiny_train_config(tmp_path, n=16, epochs=3.0, save_total_limit=1)
    result = train(resolve_config(values))
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == ["theta_best", "theta_checkpoint_epoch_3", "theta_final"]
    assert result.best_dir is not None and (result.best_dir / "model.safetensors").is_file()


def test_crash_leftovers_are_cleaned_and_an_interrupted_best_restored(tmp_path):
    models = tmp_path / "models"
    (models / "checkpoint-12").mkdir(parents=True)  # ThetaTrainer's staging folder from a crash mid-save
    (models / "checkpoint-12" / ".theta_staging").write_text("")
    (models / "theta_final.incomplete").mkdir()
    (models / "theta_best.old").mkdir()  # crash between the two renames of a best-model swap
    (models / "theta_best.old" / "theta_best.json").write_text("{}")
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, resume="auto")))
    run.close()
    assert sorted(p.name for p in models.iterdir()) == ["theta_best"]
    assert [n for n in run.notes if "checkpoint-12" in n or "theta_best" in n or "theta_final" in n] == [
        f"removed incomplete checkpoint {models / 'checkpoint-12'} (a crash interrupted its save)",
        f"restored {models / 'theta_best'} from theta_best.old (a crash interrupted its replacement)",
        f"removed incomplete checkpoint {models / 'theta_final.incomplete'} (a crash interrupted its save)"]


def test_packing_trains_one_epoch(tmp_path):
    result = train(resolve_config(tiny_train_config(tmp_path, n=16, epochs=1.0, packing=True)))
    assert [p.name for p in result.checkpoints] == ["theta_checkpoint_epoch_1"]


def test_llama_with_chat_template_trains_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM

    records = qa_records(32)
    texts = [f"{r['question']} {r['answer']}" for r in records] * 2 + ["<|im_start|>user\n<|im_start|>assistant\n"]
    model_dir = build_tiny_llama(tmp_path / "llama", texts)
    values = tiny_train_config(tmp_path, n=16, model_name=str(model_dir), epochs=1.0, learning_rate=1e-3)
    run = prepare_run(resolve_config(values))
    assert run.formatter.template == "chat"
    row = run.formatter.encode(run.train_examples[0])
    trained = run.loaded.tokenizer.decode([i for i, l in zip(row["input_ids"], row["labels"]) if l != -100])
    assert trained == run.train_examples[0].answer + "<|im_end|>"  # the newline after the turn end is not trained
    result = train(run.cfg, prepared=run)
    model = AutoModelForCausalLM.from_pretrained(result.checkpoints[0])
    assert type(model).__name__ == "LlamaForCausalLM"


# ---------------------------------------------------------------------------- the command line
# One real theta-train process (the one-line error); the other cases run its main() in this process.


def _theta_train(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "theta_ai.cli.train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env=env)


def _theta_train_main(*args, cwd, capsys):
    from theta_ai.cli.train import main

    return run_main(main, *args, capsys=capsys, cwd=cwd, env={"HF_HUB_OFFLINE": "1"})


def test_cli_dry_run_prints_plan_and_label_mask(tmp_path, capsys):
    write_json(tmp_path / "train.json", qa_records(20))
    proc = _theta_train_main("--data", "train.json", "--model-name", "theta-tiny", "--dry-run", "--precision", "fp16",
                             cwd=tmp_path, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert "precision fp16: fp16 mixed precision needs a CUDA GPU; this run uses fp32 on the CPU" in proc.stderr
    assert "effective batch 16 = 4 per device x 4 accumulation x 1 process(es)" in proc.stderr
    assert "resolved configuration:" in proc.stdout and "train tokens: 18 examples" in proc.stdout
    assert "label mask     : ____" in proc.stdout and "(_ = -100, ^ = trained)" in proc.stdout
    assert not (tmp_path / "models").exists() and not (tmp_path / "logs").exists()


def test_cli_missing_data_is_one_line(tmp_path):
    proc = _theta_train("--data", "nope.json", "--model-name", "theta-tiny", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "theta-train: error: nope.json: does not exist. Fix: check the path passed to --data / --val-data.")
    assert "Traceback" not in proc.stderr


def test_cli_trains_with_yaml_and_flags(tmp_path, capsys):
    write_json(tmp_path / "train.json", qa_records(24))
    (tmp_path / "run.yaml").write_text("model_name: theta-tiny\nbatch_size: 8\ngrad_accum: 1\nepochs: 3\n"
                                       "warmup_steps: 1\nlearning_rate: 0.002\nmax_seq_length: 64\n")
    proc = _theta_train_main("--config", "run.yaml", "--data", "train.json", "--epochs", "1", "--checkpoint-dir",
                             "out", cwd=tmp_path, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "theta_best", "theta_checkpoint_epoch_1", "theta_final"]  # --epochs 1 beat the YAML's 3
    log = next((tmp_path / "logs").glob("rtx3060-*/train.log")).read_text()
    assert "effective batch 8 = 8 per device x 1 accumulation" in log


def test_restart_with_resume_auto_wins_over_load_checkpoint(two_epoch_run, tmp_path):
    """The overnight scripts append --resume auto on restart; a fine-tuning run then resumes itself."""
    tmp, _ = two_epoch_run
    source = tmp / "models" / "theta_checkpoint_epoch_1"
    own = tmp_path / "models" / "theta_checkpoint_epoch_1"
    shutil.copytree(tmp / "models" / "theta_checkpoint_epoch_2", own)
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, load_checkpoint=str(source), resume="auto")))
    assert run.resume_from == own
    assert f"resuming from {own}; --load-checkpoint {source} only applies to a fresh start" in run.notes


def test_each_run_gets_its_own_log_folder(tmp_path, monkeypatch):
    from theta_ai.training import setup as run_setup

    monkeypatch.setattr(run_setup.time, "strftime", lambda fmt: "20261125-120000")  # two runs in the same second
    cfg = resolve_config(tiny_train_config(tmp_path))
    first = run_setup.run_log_dir(cfg, None)
    first.mkdir(parents=True)
    second = run_setup.run_log_dir(cfg, None)
    assert (first.name, second.name) == ("rtx3060-20261125-120000", "rtx3060-20261125-120000-2")
    assert first.parent == second.parent == tmp_path / "logs"


def test_a_warmup_longer_than_the_run_is_said_unless_a_ratio_replaces_it(tmp_path):
    long = prepare_run(resolve_config(tiny_train_config(tmp_path / "a", warmup_steps=500)))
    assert ("warmup 500 steps is longer than the whole run (12 steps): the learning rate never reaches 0.002; lower "
            "--warmup-steps or use --warmup-ratio 0.1") in long.notes
    ratio = prepare_run(resolve_config(tiny_train_config(tmp_path / "b", warmup_steps=500, warmup_ratio=0.1)))
    assert not [n for n in ratio.notes if n.startswith("warmup")]
    assert ratio.training_args.warmup_steps == 0.1  # Trainer reads a value below 1 as a ratio of the run
