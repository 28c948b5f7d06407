"""Writes tests/data/checkpoint_v0_1/: a checkpoint folder as theta_ai 0.1.0 (commit 2beed69, the flat module
layout, before the reliability and house changes) wrote it, for tests/test_old_checkpoints.py.

Run with that version of the code, never with the current one::

    git worktree add /tmp/theta_v0_1 2beed69
    PYTHONPATH=/tmp/theta_v0_1/src:tests python tests/data/make_v0_1_checkpoint.py
    git worktree remove /tmp/theta_v0_1

It trains a 1-layer, 16-wide GPT-2 (a few KB, so the fixture stays small) for 2 epochs, keeps the folder as
it was after epoch 1 (epoch checkpoint + theta_best) and records the digest of the uninterrupted run's
final weights, which a resume by the current code must reproduce bit for bit.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).parent / "checkpoint_v0_1"
RECORDS = 16


def values(root: Path, model_dir: Path, models: Path) -> dict:
    return {"data": [str(root / "train.json")], "val_data": [str(root / "val.json")], "model_name": str(model_dir),
            "epochs": 2.0, "batch_size": 8, "grad_accum": 1, "learning_rate": 5e-3, "warmup_steps": 1,
            "logging_steps": 1, "max_seq_length": 64, "checkpoint_dir": str(models), "logdir": str(root / "logs"),
            "generation_eval": 0}


def main() -> int:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import theta_ai
    from theta_ai.config import resolve_config
    from theta_ai.modeling import train_tiny_tokenizer
    from theta_ai.training import train
    from theta_fixtures import qa_records, weights_sha256, write_json

    assert theta_ai.__version__ == "0.1.0" and not hasattr(theta_ai, "ThetaError"), "run with theta_ai 0.1.0"
    if OUT.exists():
        shutil.rmtree(OUT)
    records = qa_records(RECORDS)
    write_json(OUT / "train.json", records)
    write_json(OUT / "val.json", records[:4])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = train_tiny_tokenizer([f"{r['question']} {r['answer']}" for r in records] + ["Question: \nAnswer: "],
                                   vocab_size=300)
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                           bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
        base = OUT / "base_model"
        model.save_pretrained(base)
        tok.save_pretrained(base)
        full = train(resolve_config(values(OUT, base, tmp / "full")))
        final_digest = weights_sha256(full.final_dir)
        models = OUT / "models"
        train(resolve_config(values(OUT, base, models)))
        for name in ("theta_checkpoint_epoch_2", "theta_final"):  # as a crash after epoch 1 would leave it
            shutil.rmtree(models / name)
    shutil.rmtree(OUT / "logs", ignore_errors=True)
    # 0.1.0 records the absolute paths it was given; they name this machine, which no reader of the fixture has.
    # Keep the records, relative to the fixture's parent (the resume never reads them: it takes data, model and
    # folders from the new run's configuration).
    for record in list(models.rglob("theta_run.json")) + list(models.rglob("trainer_state.json")):
        record.write_text(record.read_text().replace(str(OUT.parent) + "/", ""))
    (OUT / "expected.json").write_text(json.dumps({"theta_ai_version": "0.1.0", "commit": "2beed69",
                                                   "final_weights_sha256": final_digest}, indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
