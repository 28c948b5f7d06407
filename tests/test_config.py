"""Presets, YAML and flag precedence, unknown keys, and the fp16-on-CPU line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from theta_ai.config import OPTIONS, ConfigError, options_table_markdown, read_yaml_config, resolve_config
from theta_ai.config.presets import PRESETS
from theta_ai.config.samples import sample_path


def test_rtx3060_preset_is_the_guides_recipe():
    cfg = resolve_config()
    assert cfg.preset == "rtx3060"
    assert (cfg.batch_size, cfg.grad_accum, cfg.learning_rate, cfg.warmup_steps, cfg.weight_decay,
            cfg.max_seq_length, cfg.epochs, cfg.precision, cfg.metric_for_best, cfg.checkpoint_dir) == (
        4, 4, 5e-5, 500, 0.01, 512, 100.0, "auto", "eval_loss", "models")


def test_enhanced_preset_adds_the_enhanced_switches_only():
    base, enhanced = resolve_config(), resolve_config(preset="rtx3060-enhanced")
    diff = {k: enhanced.values[k] for k in base.values if base.values[k] != enhanced.values[k]}
    assert diff == {"gradient_checkpointing": True, "augment": True, "lr_scheduler": "cosine-restarts", "lr_cycles": 4,
                    "early_stopping_patience": 5, "spike_guard": True, "histogram_steps": 500}
    assert enhanced.precision == "auto"  # fp16 on CUDA


def test_cpu_quickstart_uses_theta_tiny_and_bundled_data():
    cfg = resolve_config(preset="cpu-quickstart")
    assert cfg.model_name == "theta-tiny"
    assert cfg.data == [str(sample_path("theta_sample_train.json"))]  # preset: sample:theta_sample_train.json
    assert cfg.val_data == [str(sample_path("theta_sample_val.json"))]
    assert cfg.sources["model_name"] == "preset cpu-quickstart"


def test_theta_tiny_is_the_documented_llama_with_relative_positions():
    """README and the preset state theta-tiny's shape; rotary positions make an answer's logits the same whatever
    the question's length before it (learned absolute positions, GPT-2's, would not)."""
    import torch

    from theta_ai.model.load import build_theta_tiny

    texts = [f"What does part {i} of the router do? It forwards packets number {i}." for i in range(40)]
    loaded = build_theta_tiny(texts, seed=0)
    model = loaded.model.eval()
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.tie_word_embeddings
    vocab = len(loaded.tokenizer)
    assert sum(p.numel() for p in model.parameters()) == vocab * 128 + 2 * (4 * 128 * 128 + 3 * 128 * 344 + 2 * 128) + 128
    assert resolve_config(preset="cpu-quickstart").train_on_prompt  # the preset trains on the questions too
    ids = torch.tensor([loaded.tokenizer(" It forwards packets").input_ids])
    with torch.no_grad():
        alone = model(input_ids=ids).logits  # the same tokens at positions 0.. and 7.. with nothing seen before
        shifted = model(input_ids=ids, position_ids=torch.arange(7, 7 + ids.shape[1])[None]).logits
    torch.testing.assert_close(alone, shifted, rtol=1e-4, atol=1e-5)


def test_precedence_preset_then_yaml_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: cpu-quickstart\nbatch-size: 2\nepochs: 3\nlearning_rate: 1.0e-4\n"
                    "training_args:\n  lr_scheduler_type: cosine\n")
    cfg = resolve_config({"epochs": 5}, config_file=str(path))
    assert cfg.preset == "cpu-quickstart"
    assert cfg.batch_size == 2 and cfg.sources["batch_size"] == f"config {path}"
    assert cfg.epochs == 5 and cfg.sources["epochs"] == "command line"
    assert cfg.learning_rate == 1e-4
    assert cfg.model_name == "theta-tiny" and cfg.sources["model_name"] == "preset cpu-quickstart"
    assert cfg.grad_accum == 1  # from the preset, untouched by YAML and flags
    assert cfg.training_args == {"lr_scheduler_type": "cosine"}
    # a --preset flag beats the YAML's preset key
    assert resolve_config({}, preset="rtx3060", config_file=str(path)).model_name == "gpt2"


def test_unknown_yaml_key_names_the_closest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_sise: 8\n")
    with pytest.raises(ConfigError) as err:
        resolve_config(config_file=str(path))
    assert str(err.value) == f"{path}: unknown key 'batch_sise'; did you mean 'batch_size'?"


def test_unknown_training_args_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training_args:\n  lr_scheduler_typ: cosine\n")
    with pytest.raises(ConfigError, match=r"training_args.lr_scheduler_typ is not a TrainingArguments field; "
                                          r"did you mean 'lr_scheduler_type'\?"):
        read_yaml_config(path)


def test_yaml_is_read_safely_and_errors_have_a_line(tmp_path):
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("epochs: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_yaml_config(unsafe)
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: 3\n  batch_size: [4\n")
    with pytest.raises(ConfigError, match=r"broken.yaml at line 2, column \d+: invalid YAML"):
        read_yaml_config(broken)


@pytest.mark.parametrize("values, message", [
    ({"batch_size": 0}, "batch_size must be positive, got 0 (from command line)"),
    ({"val_split": 1.5}, "val_split must be between 0 and 1, got 1.5"),
    ({"precision": "fp8"}, "command line: precision = 'fp8'; choose one of auto, fp16, bf16, fp32"),
    ({"epochs": "many"}, "command line: epochs = 'many' is not a valid float"),
])
def test_bad_values(values, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(values)
    assert str(err.value).startswith(message)


def test_unknown_preset():
    with pytest.raises(ConfigError, match=r"unknown preset 'rtx3600'; did you mean 'rtx3060'\?"):
        resolve_config(preset="rtx3600")


def test_readme_table_lists_every_flag_and_preset_value():
    table = options_table_markdown()
    for option in OPTIONS:
        assert f"`{option.cli_flag}`" in table
    assert "| `--learning-rate` | 5e-05 | 5e-05 | 0.002 | 0.003 |" in table
    assert "| `--gradient-checkpointing` | off | on | off | off |" in table
    assert "| `--lora` | off | off | on | off |" in table
    assert list(PRESETS) == ["rtx3060", "rtx3060-enhanced", "lora", "cpu-quickstart"]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "theta_ai.cli.train", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_unknown_flag_suggests_the_closest():
    proc = _cli("--batch-sise", "3")
    assert proc.returncode == 2
    assert "theta-train: error: unknown argument --batch-sise; did you mean --batch-size?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_help_groups_the_guide_flags():
    proc = _cli("--help")
    assert proc.returncode == 0
    for flag in ("--epochs", "--batch-size", "--grad-accum", "--learning-rate", "--warmup-steps", "--weight-decay",
                 "--max-seq-length", "--checkpoint-dir", "--load-checkpoint", "--distributed", "--preset", "--config",
                 "--data", "--val-data", "--val-split", "--model-name", "--resume", "--seed", "--skip-invalid",
                 "--template", "--packing", "--dry-run"):
        assert flag in proc.stdout
    for title in ("data and formatting:", "training (defaults: the rtx3060 preset):",
                  "checkpoints, fine-tuning and resuming:"):
        assert title in proc.stdout
    assert "peak learning rate (default: 5e-05)" in proc.stdout


def test_readme_table_is_the_generated_one():
    from pathlib import Path

    from theta_ai.config.options import README_TABLE_END, README_TABLE_START

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split(README_TABLE_START, 1)[1].split(README_TABLE_END, 1)[0]
    assert block.strip() == options_table_markdown().strip()


def test_misspelt_field_is_an_error_at_construction_and_assignment():
    from theta_ai.config import ThetaConfig

    with pytest.raises(TypeError, match="lora_rr"):
        ThetaConfig(lora_rr=4)
    cfg = ThetaConfig(lora_r=4)
    assert cfg.lora_r == 4
    with pytest.raises(AttributeError, match=r"ThetaConfig has no field 'lora_rr'; did you mean 'lora_r'\?"):
        cfg.lora_rr = 4
    with pytest.raises(AttributeError):
        cfg.lora_rr  # noqa: B018 - reading an unknown name is an AttributeError too
    with pytest.raises(KeyError, match=r"did you mean 'batch_size'"):
        cfg.values["batch_sise"] = 2
    with pytest.raises(TypeError):
        ThetaConfig("rtx3060")  # keyword-only: no positional order to get wrong


def test_options_are_the_dataclass_fields():
    from dataclasses import MISSING, fields

    from theta_ai.config import ThetaConfig
    from theta_ai.config.options import _bool, _keep_limit

    option_fields = [f for f in fields(ThetaConfig) if "help" in f.metadata]
    assert [o.name for o in OPTIONS] == [f.name for f in option_fields]
    assert {f.name for f in fields(ThetaConfig)} - {o.name for o in OPTIONS} == {
        "preset", "config_file", "training_args", "sources"}
    defaults = ThetaConfig()
    for option, f in zip(OPTIONS, option_fields):
        assert option.help == f.metadata["help"] and option.help, option.name
        assert option.group == f.metadata["group"] and option.choices == f.metadata["choices"], option.name
        assert option.default == getattr(defaults, option.name), option.name
        assert option.default == (f.default_factory() if f.default is MISSING else f.default), option.name
    by_name = {o.name: o for o in OPTIONS}
    assert by_name["data"].repeatable and by_name["data"].type is str and by_name["data"].default == []
    assert by_name["lora"].type is _bool and by_name["save_total_limit"].type is _keep_limit
    assert by_name["lora_r"].type is int and by_name["neftune_alpha"].type is float
    assert by_name["precision"].choices == ("auto", "fp16", "bf16", "fp32")
    assert [o.group for o in OPTIONS] == sorted((o.group for o in OPTIONS), key=[
        "data", "model", "training", "enhanced", "checkpoints", "run"].index)  # grouped as --help shows them
    assert ThetaConfig().data is not ThetaConfig().data  # a fresh list per config


def test_fields_are_typed():
    from typing import get_type_hints

    from theta_ai.config import ThetaConfig

    hints = get_type_hints(ThetaConfig)
    assert hints["lora_r"] is int and hints["epochs"] is float and hints["spike_guard"] is bool
    assert hints["data"] == list[str] and hints["neftune_alpha"] == float | None
    assert hints["load_checkpoint"] == str | None and hints["sources"] == dict[str, str]
    cfg = resolve_config({"lora_r": "16", "epochs": "2", "spike_guard": "yes"})
    assert (cfg.lora_r, cfg.epochs, cfg.spike_guard) == (16, 2.0, True)
    assert type(cfg.lora_r) is int and type(cfg.epochs) is float


def test_values_view_and_replace():
    from dataclasses import replace

    cfg = resolve_config({"batch_size": 8}, preset="cpu-quickstart")
    values = dict(cfg.values)
    assert list(values) == [o.name for o in OPTIONS] and values["batch_size"] == 8 == cfg.values["batch_size"]
    assert cfg.as_dict() == {"preset": "cpu-quickstart", "config_file": None, **values, "training_args": {}}
    cfg.values["checkpoint_dir"] = "elsewhere"  # writes through to the field
    assert cfg.checkpoint_dir == "elsewhere" and dict(cfg.values)["checkpoint_dir"] == "elsewhere"
    values["epochs"] = 1.0  # a dict() of the view is a copy
    assert cfg.epochs != 1.0
    smaller = replace(cfg, batch_size=4, grad_accum=2, sources=dict(cfg.sources, batch_size="--auto-batch-size"))
    assert (smaller.batch_size, smaller.grad_accum, smaller.model_name) == (4, 2, "theta-tiny")
    assert smaller.sources["batch_size"] == "--auto-batch-size" and cfg.sources["batch_size"] == "command line"
    assert (cfg.batch_size, cfg.preset) == (8, "cpu-quickstart")


def test_the_lora_preset_is_the_measured_recipe_and_keeps_the_users_model():
    cfg = resolve_config({"model_name": "my/model", "data": ["train.json"]}, preset="lora")
    assert (cfg.lora, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (True, 16, 32, 0.0)
    assert (cfg.learning_rate, cfg.warmup_ratio, cfg.epochs, cfg.batch_size, cfg.grad_accum) == (2e-3, 0.05, 4.0, 2, 1)
    assert cfg.model_name == "my/model" and cfg.sources["learning_rate"] == "preset lora"


def test_torch_compile_reaches_trainer(tmp_path):
    from theta_ai.config.training_args import build_training_arguments

    notes: list[str] = []
    assert build_training_arguments(resolve_config({}), tmp_path, notes).torch_compile is False
    assert build_training_arguments(resolve_config({"torch_compile": True}), tmp_path, notes).torch_compile is True
