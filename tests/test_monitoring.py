"""TensorBoard monitoring (theta_ai.monitoring): a real theta-tiny run read back with TensorBoard's own reader,
plus the layer grouping, the memory warning and the throughput clock on their own."""

from __future__ import annotations

import logging
import math

import pytest
from theta_fixtures import tiny_train_config

from theta_ai.monitoring import (GradientMonitorCallback, MemoryCallback, MemoryReading, ThroughputCallback,
                                 config_markdown, layer_group, monitoring_callbacks, parameter_groups, run_hparams)

GIB = 2**30
TRAINER_SCALARS = ("train/loss", "train/learning_rate", "train/grad_norm", "train/epoch", "eval/loss")
STEPS = 12  # 48 examples / batch 8 = 6 optimizer steps per epoch, 2 epochs


def read_events(log_dir):
    """All events of a run folder, as TensorBoard's own reader loads them (every point kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"histograms": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def scalars(acc, tag) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def text(acc, tag) -> str:
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(acc.Tensors(f"{tag}/text_summary")[-1].tensor_proto).item().decode()


def hparams_session(acc):
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    return plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info


@pytest.fixture(scope="module")
def monitored_run(tmp_path_factory):
    """A 2-epoch theta-tiny run with grad norms every step, histograms every 2nd step and 2 generated answers,
    through theta-train's own wiring (build_trainer gives the monitoring callbacks its one writer)."""
    from theta_ai import resolve_config
    from theta_ai.training.run import train

    tmp = tmp_path_factory.mktemp("monitoring")
    values = tiny_train_config(tmp, grad_log_steps=1, histogram_steps=2, generation_eval=2)
    cfg = resolve_config(values)
    result = train(cfg)
    return result, read_events(result.log_dir), cfg


def test_trainer_tensorboard_callback_tags(monitored_run):
    _, acc, _ = monitored_run
    for tag in TRAINER_SCALARS:
        assert tag in acc.Tags()["scalars"], tag
        assert all(math.isfinite(v) for v in scalars(acc, tag).values()), tag
    assert sorted(scalars(acc, "eval/loss")) == [6, 12]
    assert 0 < scalars(acc, "train/learning_rate")[2] <= 2e-3
    assert {"args/text_summary", "model_config/text_summary"} <= set(acc.Tags()["tensors"])


def test_per_group_gradient_norms_every_step(monitored_run):
    _, acc, _ = monitored_run
    groups = ("embeddings", "block_0", "block_1", "head")  # theta-tiny: Llama, 2 blocks, lm_head tied to embed_tokens
    for group in groups:
        norms = scalars(acc, f"grad_norm/{group}")
        assert sorted(norms) == list(range(1, STEPS + 1)), group
        assert all(v > 0 and math.isfinite(v) for v in norms.values()), group
    assert "grad_norm/other" not in acc.Tags()["scalars"]
    total = scalars(acc, "grad_norm/total")
    for step, value in total.items():
        parts = math.sqrt(sum(scalars(acc, f"grad_norm/{g}")[step] ** 2 for g in groups))
        assert value == pytest.approx(parts, rel=1e-5)
    # Trainer clips before on_pre_optimizer_step: the logged norms are after clipping to max_grad_norm (1.0),
    # and train/grad_norm (before clipping) equals their total whenever no clipping happened.
    for step, unclipped in scalars(acc, "train/grad_norm").items():
        assert total[step] == pytest.approx(min(unclipped, 1.0), rel=1e-3)


def test_histograms_every_second_step(monitored_run):
    _, acc, _ = monitored_run
    for kind in ("weights", "gradients"):
        for group in ("embeddings", "block_0", "block_1", "head"):
            events = acc.Histograms(f"{kind}/{group}")
            assert sorted({e.step for e in events}) == list(range(2, STEPS + 1, 2)), (kind, group)
            assert all(e.histogram_value.num > 0 for e in events)


def test_throughput_and_memory_at_each_logging_step(monitored_run):
    _, acc, _ = monitored_run
    logged = sorted(scalars(acc, "train/loss"))
    for tag in ("throughput/samples_per_second", "throughput/tokens_per_second", "memory/rss_gib"):
        values = scalars(acc, tag)
        assert sorted(values) == logged, tag
        assert all(v > 0 for v in values.values()), tag
    # each example is 20-40 real tokens long: tokens/s sits between 10x and 60x samples/s
    samples, tokens = scalars(acc, "throughput/samples_per_second"), scalars(acc, "throughput/tokens_per_second")
    assert all(10 < tokens[s] / samples[s] < 60 for s in logged)
    assert not any(tag.startswith("memory/cuda") for tag in acc.Tags()["scalars"])  # CPU run


def test_config_and_prediction_text(monitored_run):
    _, acc, _ = monitored_run
    config = text(acc, "config")
    assert config.startswith("| option | value |")
    assert "| model_name | theta-tiny |" in config and "| grad_log_steps | 1 |" in config
    predictions = acc.Tensors("eval/predictions/text_summary")
    assert sorted({e.step for e in predictions}) == [6, 12]
    assert "| # | question | reference | prediction |" in text(acc, "eval/predictions")


def test_hparams_in_the_run_folder(monitored_run):
    result, acc, cfg = monitored_run
    assert not [p for p in result.log_dir.iterdir() if p.is_dir()]  # run_name="." : no timestamped sub-run
    session = hparams_session(acc)
    hp = {k: v.number_value or v.string_value or v.bool_value for k, v in session.hparams.items()}
    assert hp["learning_rate"] == pytest.approx(2e-3) and hp["batch_size"] == 8 and hp["grad_accum"] == 1
    assert hp["effective_batch"] == 8 and hp["epochs"] == 2 and hp["max_seq_length"] == 64
    assert hp["model_name"] == "theta-tiny" and hp["lr_scheduler"] == "linear" and hp["preset"]
    assert "augment" in session.hparams and ("lora" in session.hparams) == ("lora" in cfg.as_dict())
    assert "lora_r" not in session.hparams  # only with lora on
    eval_loss = scalars(acc, "eval/loss")
    assert scalars(acc, "hparam/eval_loss") == {STEPS: pytest.approx(eval_loss[STEPS])}
    assert scalars(acc, "hparam/best_eval_loss") == {STEPS: pytest.approx(min(eval_loss.values()))}


# ---------------------------------------------------------------------------- units


def test_layer_groups_for_gpt2_and_llama():
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2))
    groups = parameter_groups(gpt2)
    assert list(groups) == ["embeddings", "block_0", "block_1", "head"]
    assert len(groups["embeddings"]) == 2 and len(groups["head"]) == 2  # wte+wpe; ln_f weight+bias (lm_head tied)

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False))
    names = {name: layer_group(name) for name, _ in llama.named_parameters()}
    assert names["model.embed_tokens.weight"] == "embeddings" and names["model.norm.weight"] == "head"
    assert names["lm_head.weight"] == "head" and names["model.layers.2.input_layernorm.weight"] == "block_2"
    assert list(parameter_groups(llama)) == ["embeddings", "block_0", "block_1", "block_2", "head"]
    assert layer_group("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight") == "block_0"
    assert layer_group("score.weight") == "other"


class _Writer:
    """Records add_scalar calls (a stand-in for SummaryWriter)."""

    def __init__(self):
        self.scalars: dict[str, dict[int, float]] = {}

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, {})[step] = value


def _state(step=0, epoch=0.0, tokens=0):
    from transformers import TrainerState

    state = TrainerState()
    state.global_step, state.epoch, state.num_input_tokens_seen = step, epoch, tokens
    return state


def test_memory_warning_once_above_90_percent(caplog):
    readings = iter([MemoryReading(rss=GIB, cuda_allocated=5 * GIB, cuda_reserved=6 * GIB, cuda_peak=7 * GIB,
                                   cuda_total=12 * GIB)]
                    + [MemoryReading(rss=GIB, cuda_allocated=10 * GIB, cuda_reserved=11.5 * GIB,
                                     cuda_peak=peak * GIB, cuda_total=12 * GIB) for peak in (11, 11.5, 11.9)])
    writer = _Writer()
    callback = MemoryCallback(writer, memory_reader=lambda: next(readings))
    callback.on_train_begin(None, _state(), None)
    with caplog.at_level(logging.WARNING, logger="theta_ai"):
        for step in (1, 2, 3, 4):
            callback.on_log(None, _state(step), None, logs={"loss": 1.0})
        callback.on_log(None, _state(4), None, logs={"eval_loss": 1.0})  # evaluation logs are not sampled
    warnings = [r.getMessage() for r in caplog.records if r.name == "theta_ai" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    for flag in ("--batch-size", "--grad-accum", "--max-seq-length", "--gradient-checkpointing", "--plan"):
        assert flag in warnings[0]
    assert "92%" in warnings[0]  # 11 of 12 GiB, the first reading past 90%
    assert writer.scalars["memory/cuda_peak_gib"] == {1: 7, 2: 11, 3: 11.5, 4: 11.9}
    assert writer.scalars["memory/cuda_allocated_gib"][1] == 5 and writer.scalars["memory/cuda_reserved_gib"][4] == 11.5
    assert writer.scalars["memory/rss_gib"] == {1: 1, 2: 1, 3: 1, 4: 1}


def test_throughput_leaves_out_evaluation_and_saving():
    from transformers import TrainingArguments

    now = [100.0]
    args = TrainingArguments("unused", per_device_train_batch_size=8, include_num_input_tokens_seen="non_padding",
                             report_to="none")

    class Loader:
        dataset = range(48)

    writer = _Writer()
    cb = ThroughputCallback(writer, clock=lambda: now[0])
    cb.on_train_begin(args, _state(), None, train_dataloader=Loader())
    for step in (1, 2, 3):  # 3 steps of 8 samples / 200 tokens, 1 s each
        cb.on_step_begin(args, _state(step - 1), None)
        now[0] += 1.0
        cb.on_step_end(args, _state(step, step / 6, 200 * step), None)
    cb.on_evaluate(args, _state(3, 0.5, 600), None, metrics={})
    now[0] += 30.0  # evaluation and a checkpoint: not training time
    cb.on_save(args, _state(3, 0.5, 600), None)
    cb.on_step_begin(args, _state(3, 0.5, 600), None)
    now[0] += 1.0
    cb.on_step_end(args, _state(4, 4 / 6, 800), None)
    cb.on_log(args, _state(4, 4 / 6, 800), None, logs={"loss": 1.0})
    assert writer.scalars["throughput/samples_per_second"][4] == pytest.approx(8.0)
    assert writer.scalars["throughput/tokens_per_second"][4] == pytest.approx(200.0)


def test_nothing_without_a_writer_or_off_the_main_process():
    assert monitoring_callbacks(None, {"grad_log_steps": 1}) == []
    writer = _Writer()
    callback = GradientMonitorCallback(writer, grad_log_steps=1)
    state = _state()
    state.is_world_process_zero = False
    callback.on_pre_optimizer_step(None, state, None, model=object())
    assert writer.scalars == {}


def test_hparams_and_config_table():
    cfg = {"preset": "rtx3060", "learning_rate": 5e-5, "batch_size": 4, "grad_accum": 4, "warmup_ratio": None,
           "data": ["a.json", "b|c.json"], "augment": False, "lora": False, "lora_r": 8}
    hp = run_hparams(cfg, world_size=2)
    assert hp == {"preset": "rtx3060", "learning_rate": 5e-5, "batch_size": 4, "grad_accum": 4,
                  "effective_batch": 32, "augment": False, "lora": False}
    assert run_hparams(dict(cfg, lora=True))["lora_r"] == 8
    table = config_markdown(cfg)
    assert "| data | a.json, b\\|c.json |" in table and "| warmup_ratio | None |" in table
