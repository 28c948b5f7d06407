"""GGUF files as a starting point: theta-train and theta-eval on a ``.gguf`` (or a folder holding one), offline.

The test writes its own GGUF with the ``gguf`` package: a tiny Llama (2 layers, width 64, tied embeddings, the MLP
weights stored as Q8_0 blocks, the rest as F32) with a byte-level BPE tokenizer and a ChatML template in the
metadata, the way llama.cpp's converter lays them out (q/k rows permuted for its rotary layout). Checkpoints of a
GGUF run are plain safetensors folders; LoRA on a GGUF base saves the dequantized base to ``theta_base/``.
theta-train and theta-eval run as subprocesses once each on the GGUF file; the other command lines run the
commands' ``main()`` in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import run_main
from theta_ai.errors import ModelLoadError
from theta_fixtures import CHATML, qa_records, write_json

pytestmark = pytest.mark.slow
gguf = pytest.importorskip("gguf")  # the [gguf] extra; the test extra installs it

BIN = Path(sys.executable).parent
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128
# HF Llama module -> GGUF tensor name (gguf's own TensorNameMap says the same; spelled out to be readable)
GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
SAMPLE_TEXTS = ["What does the router number 3 do?", "The cache number 12 stores data for the system.",
                "<|im_start|>user\nWhat does the kernel do?<|im_end|>\n"]


def _permute(weights, n_head: int, n_head_kv: int):
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (transformers' GGUF loader reverses it)."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_tiny_gguf(path: Path, texts: list[str]) -> dict:
    """Write a tiny Llama GGUF to ``path``; returns the state dict transformers should dequantize it to."""
    import numpy as np
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, min_frequency=2, special_tokens=SPECIALS, show_progress=False)
    model_state = json.loads(bpe._tokenizer.to_str())["model"]
    tokens = [token for token, _ in sorted(model_state["vocab"].items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model_state["merges"]]
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=256,
                         tie_word_embeddings=True)
    state = {k: v.detach().numpy() for k, v in LlamaForCausalLM(config).state_dict().items()}

    q8 = gguf.GGMLQuantizationType.Q8_0
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("theta tiny llama")
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")  # byte-level BPE
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_chat_template(CHATML)

    expected = dict(state)
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])  # no output.weight: tied
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    for i in range(LAYERS):
        for hf_name, gguf_name in GGUF_NAMES.items():
            key = f"model.layers.{i}.{hf_name}.weight"
            tensor = state[key]
            if gguf_name == "attn_q":
                tensor = _permute(tensor, HEADS, HEADS)
            elif gguf_name == "attn_k":
                tensor = _permute(tensor, HEADS, KV_HEADS)
            if gguf_name in ("ffn_gate", "ffn_up", "ffn_down"):
                blocks = gguf.quants.quantize(tensor, q8)
                writer.add_tensor(f"blk.{i}.{gguf_name}.weight", blocks, raw_shape=blocks.shape, raw_dtype=q8)
                expected[key] = gguf.quants.dequantize(blocks, q8).reshape(tensor.shape)
            else:
                writer.add_tensor(f"blk.{i}.{gguf_name}.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    expected["lm_head.weight"] = expected["model.embed_tokens.weight"]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in expected.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    train, val = qa_records(16), qa_records(20)[16:]
    write_json(root / "train.json", train)
    write_json(root / "val.json", val)
    texts = ["Question: \nAnswer: ", "user assistant system"]
    texts += [r[k] for r in train + val for k in ("question", "answer")]
    (root / "one").mkdir()
    gguf_file = root / "one" / "tiny-q8_0.gguf"
    expected = write_tiny_gguf(gguf_file, texts * 3)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")

    def theta(tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / tool), *args], cwd=root, env=env, capture_output=True, text=True,
                              timeout=240)

    def main(tool: str, *args: str, capsys) -> subprocess.CompletedProcess:
        """The command's main() in this process, in ``root`` and offline, read back as from ``theta``."""
        from theta_ai.cli import eval as theta_eval, train as theta_train

        command = {"theta-train": theta_train.main, "theta-eval": theta_eval.main}[tool]
        return run_main(command, *args, capsys=capsys, cwd=root, env={"HF_HUB_OFFLINE": "1"})

    return type("Run", (), {"root": root, "file": gguf_file, "folder": root / "one", "expected": expected,
                            "theta": staticmethod(theta), "main": staticmethod(main)})


def _train_args(model: str, checkpoint_dir: str, *extra: str) -> list[str]:
    return ["--data", "train.json", "--val-data", "val.json", "--model-name", model, "--epochs", "1",
            "--batch-size", "8", "--grad-accum", "1", "--learning-rate", "1e-3", "--warmup-steps", "0",
            "--max-seq-length", "64", "--checkpoint-dir", checkpoint_dir, "--logdir", "logs", *extra]


def _notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "GGUF file dequantized" in line]


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _one_line_error(result: subprocess.CompletedProcess, program: str) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{program}: error: ")
    return lines[0]


def test_library_load_dequantizes_the_file(run):
    """load_model_and_tokenizer on the file (and on its folder): the exact dequantized weights, a plain model."""
    import torch

    from theta_ai.model.load import load_model_and_tokenizer

    loaded = load_model_and_tokenizer(str(run.file))
    model = loaded.model
    assert "GGUF" in loaded.source and "float32" in loaded.source
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert not hasattr(model.config, "quantization_config")
    assert model.dtype == torch.float32 and model.config.tie_word_embeddings
    state = model.state_dict()
    assert set(state) == set(run.expected)
    for key, tensor in run.expected.items():
        torch.testing.assert_close(state[key], tensor, rtol=0, atol=1e-6, msg=key)
    tokenizer = loaded.tokenizer
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert tokenizer.chat_template == CHATML
    eos = model.generation_config.eos_token_id
    assert tokenizer.eos_token_id in (eos if isinstance(eos, list) else [eos])
    # a folder holding exactly one .gguf loads the same file
    again = load_model_and_tokenizer(str(run.folder))
    assert all(torch.equal(again.model.state_dict()[k], state[k]) for k in state)


def test_bad_gguf_paths_are_one_line_errors(run, tmp_path):
    import numpy as np

    from theta_ai.model.load import load_model_and_tokenizer, load_tokenizer

    two = tmp_path / "two"
    two.mkdir()
    for name in ("a-q4_k_m.gguf", "b-q8_0.gguf"):
        shutil.copy(run.file, two / name)
    corrupt = tmp_path / "broken.gguf"
    corrupt.write_bytes(run.file.read_bytes()[:3000])
    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("this is not a GGUF file\n")
    hollow = tmp_path / "hollow.gguf"
    hollow.mkdir()
    cases = {str(two): ["holds 2 .gguf files", "a-q4_k_m.gguf, b-q8_0.gguf"],
             str(tmp_path / "missing.gguf"): ["missing.gguf does not exist"],
             str(corrupt): ["broken.gguf is not a readable GGUF file"],
             str(not_gguf): ["text.gguf is not a readable GGUF file"],
             str(hollow): ["hollow.gguf is a folder holding no .gguf file"]}
    for path, expected in cases.items():
        for load in (load_model_and_tokenizer, load_tokenizer):
            with pytest.raises(ModelLoadError) as error:
                load(path)
            message = str(error.value)
            assert "\n" not in message and all(part in message for part in expected), (path, message)
    # an architecture transformers does not convert: named in the one line
    other = gguf.GGUFWriter(str(tmp_path / "rwkv.gguf"), "rwkv7")
    other.add_tensor("token_embd.weight", np.zeros((2, 32), dtype=np.float32))
    for step in (other.write_header_to_file, other.write_kv_data_to_file, other.write_tensors_to_file, other.close):
        step()
    with pytest.raises(ModelLoadError, match=r"rwkv\.gguf: transformers cannot load .*architecture rwkv7") as error:
        load_model_and_tokenizer(str(tmp_path / "rwkv.gguf"))
    assert "\n" not in str(error.value)


def test_theta_train_on_a_gguf_file_writes_safetensors_checkpoints(run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = run.theta("theta-train", *_train_args("one/tiny-q8_0.gguf", "m"))
    assert result.returncode == 0, result.stderr[-3000:]
    notes = _notes(result.stderr)
    assert len(notes) == 1 and notes[0].startswith("[theta] warning: ") and "Q8_0 x6" in notes[0], result.stderr
    assert "safetensors" in notes[0]
    banner = next(line for line in result.stderr.splitlines() if line.startswith("[theta] theta-train: preset"))
    assert "model one/tiny-q8_0.gguf, GGUF dequantized to float32 (" in banner

    final = run.root / "m" / "theta_final"
    assert (final / "model.safetensors").is_file() and (final / "config.json").is_file()
    assert not list((run.root / "m").rglob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(final)  # plain transformers, no gguf_file
    assert getattr(model, "hf_quantizer", None) is None
    reference = AutoModelForCausalLM.from_pretrained(run.folder, gguf_file=run.file.name)
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "tie_word_embeddings", "max_position_embeddings", "eos_token_id"):
        assert getattr(model.config, key) == getattr(reference.config, key), key
    weights = _weights(final)
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in run.expected.items()
                                                          if k != "lm_head.weight"}  # tied: saved once
    assert not torch.equal(weights["model.layers.0.mlp.up_proj.weight"],
                           run.expected["model.layers.0.mlp.up_proj.weight"])  # it trained
    tokenizer = AutoTokenizer.from_pretrained(final)
    original = AutoTokenizer.from_pretrained(run.folder, gguf_file=run.file.name)
    assert [tokenizer(t).input_ids for t in SAMPLE_TEXTS] == [original(t).input_ids for t in SAMPLE_TEXTS]
    assert tokenizer.get_vocab() == original.get_vocab() and tokenizer.chat_template == original.chat_template
    assert (tokenizer.eos_token, tokenizer.bos_token) == (original.eos_token, original.bos_token)
    run_info = json.loads((final / "theta_run.json").read_text())
    assert run_info["template"] == "chat"


def test_theta_eval_on_a_gguf_file(run):
    result = run.theta("theta-eval", "--model-path", "one/tiny-q8_0.gguf", "--data", "val.json", "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_notes(result.stderr)) == 1
    out = run.root / "one" / "tiny-q8_0_eval"  # next to the file: a file has no folder of its own
    results = json.loads((out / "eval_results.json").read_text())
    assert results["num_examples"] == 4 and "rougeL" in results["metrics"]


def test_lora_on_a_gguf_base_evaluates_and_merges(run, capsys):
    import torch
    from transformers import AutoModelForCausalLM

    result = run.main("theta-train", *_train_args(str(run.folder), "lora", "--lora", "--lora-r", "4"), capsys=capsys)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(_notes(result.stderr)) == 1
    base = run.root / "lora" / "theta_base"
    final = run.root / "lora" / "theta_final"
    assert (final / "adapter_model.safetensors").is_file()
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == "../theta_base"
    weights = _weights(base)  # the dequantized GGUF, saved once, before training
    for key, tensor in weights.items():
        assert torch.equal(tensor, run.expected[key]), key
    assert not list((run.root / "lora").rglob("*.gguf"))

    evaluated = run.main("theta-eval", "--model-path", str(final), "--max-new-tokens", "8", capsys=capsys)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert not _notes(evaluated.stderr)  # the base is a safetensors folder now
    assert (final / "eval" / "eval_results.json").is_file()

    merged = run.main("theta-train", "--merge-lora", str(final), "--output", "merged", capsys=capsys)
    assert merged.returncode == 0, merged.stderr[-3000:]
    model = AutoModelForCausalLM.from_pretrained(run.root / "merged")
    assert set(model.state_dict()) == set(run.expected)
    assert not torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                           run.expected["model.layers.0.self_attn.q_proj.weight"])  # the adapter is merged in


def test_missing_gguf_package_is_one_line_naming_the_extra(run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now raises ImportError, as when absent
    result = run.main("theta-train", *_train_args(str(run.file), "nogguf", "--dry-run"), capsys=capsys)
    line = _one_line_error(result, "theta-train")
    assert "tiny-q8_0.gguf" in line and "gguf package" in line and 'pip install "theta_ai[gguf]"' in line
    assert not (run.root / "nogguf").exists()


def test_the_planner_reads_the_config_a_gguf_file_carries(run, capsys):
    """--plan on a .gguf: the memory estimate from the file's own config (no tensor is dequantized)."""
    from theta_ai.planner.models import model_config

    config = model_config(str(run.file))
    assert (type(config).__name__, config.hidden_size, config.num_hidden_layers) == ("LlamaConfig", 64, 2)
    result = run.main("theta-train", "--model-name", str(run.file), "--plan", "--gpu-memory", "12GiB", capsys=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "estimated peak" in result.stdout + result.stderr
