"""--precision auto on a CPU: the bf16 probe times the run's own model, leaves it untouched, and decides once."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel

from theta_ai.config import resolve_config
from theta_ai.config.training_args import resolve_precision
from theta_ai.training import precision
from theta_ai.training.precision import MIN_SPEEDUP, ProbeResult, choose_cpu_precision, cpu_has_native_bf16

XEON = "processor\t: 0\nflags\t\t: fpu vme sse2 avx2 avx512f avx512_bf16 avx512_vnni\nbugs\t\t: spectre_v1\n"
EPYC = "processor\t: 0\nflags\t\t: fpu vme sse2 avx2 avx512f avx512_vnni\nbugs\t\t: spectre_v1\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16(XEON) is True
    assert cpu_has_native_bf16(EPYC) is False
    assert cpu_has_native_bf16(XEON.replace("avx512_bf16", "amx_bf16 amx_tile")) is True
    assert cpu_has_native_bf16("") is False


def _model(layers: int, width: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=layers, n_embd=width, n_head=4, vocab_size=2048, n_positions=256))


def test_the_probe_leaves_the_model_and_the_random_state_as_it_found_them():
    model = _model(2, 64).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    result = precision.probe_cpu_bf16(model, batch=2, tokens=32, repeats=1)
    assert torch.equal(torch.rand(3), expected_next)  # dropout draws of the run are unchanged
    assert result.fp32_s > 0 and result.bf16_s > 0
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_small_models_and_resumed_runs_are_not_probed(monkeypatch):
    calls = []
    monkeypatch.setattr(precision, "probe_cpu_bf16", lambda model, **kw: calls.append(model) or ProbeResult(1.0, 0.1))
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert choose_cpu_precision(_model(2, 64)) == (False, None)  # 0.2M parameters: overhead, not matrices
    assert choose_cpu_precision(_model(2, 64), recorded="bf16") == (True, None)
    assert choose_cpu_precision(_model(2, 64), recorded="fp32") == (False, None)
    assert calls == []


def test_the_decision_follows_the_measured_speedup(monkeypatch):
    big = _model(6, 640)
    assert sum(p.numel() for p in big.parameters()) >= precision.MIN_PARAMETERS
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "probe_cpu_bf16", lambda model, **kw: ProbeResult(0.300, 0.200))
    bf16, line = choose_cpu_precision(big)
    assert bf16 is True
    assert line == ("precision auto: a training step of this model ran 1.50x faster under bf16 autocast on this CPU "
                    "(300 ms fp32, 200 ms bf16), so this run uses bf16 autocast over fp32 weights (--precision fp32 "
                    "to keep fp32)")
    monkeypatch.setattr(precision, "probe_cpu_bf16", lambda model, **kw: ProbeResult(0.300, 0.300 / (MIN_SPEEDUP - 0.01)))
    assert choose_cpu_precision(big) == (False, "precision auto: bf16 autocast was not faster on this CPU (1.14x); "
                                                "training in fp32")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert choose_cpu_precision(big) == (False, None)  # emulated bf16 is never faster: not even probed


def test_a_real_probe_on_this_machine_decides_consistently():
    """The real timing (a 2-layer 256-wide model, a small batch): whatever this CPU does, the choice agrees with
    the numbers."""
    result = precision.probe_cpu_bf16(_model(2, 256), batch=2, tokens=64, repeats=1)
    assert result.bf16_wins == (result.fp32_s / result.bf16_s >= MIN_SPEEDUP)


def test_auto_takes_bf16_autocast_on_the_cpu_when_the_probe_chose_it():
    cfg = resolve_config({"precision": "auto"})
    notes: list[str] = []
    if torch.cuda.is_available():
        return
    assert resolve_precision(cfg, notes, cpu_bf16=True) == (False, True) and notes == []
    assert resolve_precision(cfg, notes, cpu_bf16=False) == (False, False)
    assert notes == ["precision auto: fp16 mixed precision needs a CUDA GPU; this run uses fp32 on the CPU"]


def test_bf16_autocast_trains_on_a_cpu(tmp_path, monkeypatch):
    """What auto picks after a winning probe (and --precision bf16) must run: Trainer refuses bf16 on a CPU unless
    told it is a CPU run (use_cpu), which theta-train once set only for multi-process runs."""
    if torch.cuda.is_available():
        return
    from theta_ai.training import setup
    from theta_ai.training.run import prepare_run, train
    from theta_fixtures import tiny_train_config

    monkeypatch.setattr(setup, "choose_cpu_precision", lambda model, recorded=None, loss_path=None: (True, "probe said bf16"))
    run = prepare_run(resolve_config(tiny_train_config(tmp_path, n=16, epochs=1.0, precision="auto")))
    assert run.training_args.bf16 and not run.training_args.fp16 and run.training_args.use_cpu
    assert "probe said bf16" in run.notes
    result = train(run.cfg, prepared=run)
    state = json.loads((result.final_dir / "theta_run.json").read_text())
    assert state["precision"] == "bf16"
    assert result.metrics["train_loss"] > 0
    weights = load_file(result.final_dir / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}  # autocast over fp32 master weights


@pytest.mark.parametrize("loss_path", [(False, True), (True, True)])
def test_the_probe_times_the_runs_own_loss_path(loss_path, monkeypatch):
    """With the answer-token head the probe's step runs the fused head and loss (what the run will train with), the
    same loss as the model's own, and puts the real head back afterwards."""
    from theta_ai.training import loss as loss_module

    model = _model(2, 64)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids = torch.randint(0, 2048, (2, 32), generator=torch.Generator().manual_seed(0))
    calls = []
    fused = loss_module.linear_cross_entropy
    monkeypatch.setattr(loss_module, "linear_cross_entropy", lambda *a, **k: calls.append(a[4]) or fused(*a, **k))
    torch.testing.assert_close(precision._step_loss(model, ids, loss_path), model(input_ids=ids, labels=ids).loss,
                               rtol=1e-5, atol=0)
    assert calls == [loss_module.chunk_rows(2048) if loss_path[0] else None]
    precision.probe_cpu_bf16(model, batch=2, tokens=32, repeats=1, loss_path=loss_path)
    assert len(calls) == 1 + 4 and model.get_output_embeddings() is model.lm_head
    assert isinstance(model.lm_head, torch.nn.Linear)
