"""Real checkpoints are stored in bf16 or fp16; theta-train trains fp32 master weights whatever the file holds."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from theta_ai.config import resolve_config
from theta_ai.training.run import prepare_run
from theta_fixtures import build_tiny_llama, qa_records, tiny_train_config


def test_a_bf16_checkpoint_trains_in_fp32_and_says_so(tmp_path):
    """transformers 5 loads a checkpoint in its stored dtype; AdamW steps on bf16 weights round small updates away
    (a bf16 weight near 1.0 moves in steps of 2^-7, a 5e-5 update is lost), so theta-train loads fp32."""
    texts = [r[k] for r in qa_records(24) for k in ("question", "answer")]
    folder = build_tiny_llama(tmp_path / "bf16-model", texts)
    AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).save_pretrained(folder)
    assert AutoModelForCausalLM.from_pretrained(folder).dtype == torch.bfloat16  # what plain loading gives

    run = prepare_run(resolve_config(tiny_train_config(tmp_path, model_name=str(folder), dry_run=True)))
    assert {p.dtype for p in run.loaded.model.parameters()} == {torch.float32}
    assert (f"{folder} is stored in bfloat16: loaded in float32 for training (fp32 master weights; --precision "
            f"fp16/bf16 is autocast over them, so small updates are not rounded away)") in run.notes
    run.close()


def test_an_fp32_checkpoint_loads_without_a_note(tmp_path):
    texts = [r[k] for r in qa_records(24) for k in ("question", "answer")]
    folder = build_tiny_llama(tmp_path / "fp32-model", texts)
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, model_name=str(folder), dry_run=True)))
    assert {p.dtype for p in run.loaded.model.parameters()} == {torch.float32}
    assert not [n for n in run.notes if "is stored in" in n]
    run.close()
