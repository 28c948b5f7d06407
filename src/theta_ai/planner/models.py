"""The model side of :mod:`theta_ai.planner`: configs without the network, exact parameter counts on ``meta``.

``model_config("gpt2-medium")`` returns the config of a known GPT-2 size without any download (they
are architecture constants); other names are read from a local folder or the local Hugging Face
cache only. ``model_stats(config)`` builds the causal LM on PyTorch's ``meta`` device (shapes, no
storage: nothing is allocated, on the GPU or elsewhere) and counts its parameters exactly.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

from theta_ai.config import ConfigError

# GPT-2 sizes are fixed architectures: their configs need no download.
KNOWN_GPT2 = {
    "gpt2": {},
    "distilgpt2": {"n_layer": 6},
    "gpt2-medium": {"n_embd": 1024, "n_layer": 24, "n_head": 16},
    "gpt2-large": {"n_embd": 1280, "n_layer": 36, "n_head": 20},
    "gpt2-xl": {"n_embd": 1600, "n_layer": 48, "n_head": 25},
}

# A few chat models people fit into 12 GB, as architecture constants (their config.json values), so that --plan and
# README's table need no download. Anything else is read from its folder or the local Hugging Face cache.
KNOWN_CONFIGS = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                            num_attention_heads=9, num_key_value_heads=3, vocab_size=49152)),
    "Qwen/Qwen2.5-0.5B-Instruct": ("qwen2", dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2, vocab_size=151936)),
    "Qwen/Qwen2.5-1.5B-Instruct": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                   num_attention_heads=12, num_key_value_heads=2, vocab_size=151936)),
    "meta-llama/Llama-3.2-1B-Instruct": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)),
    "meta-llama/Llama-3.2-3B-Instruct": ("llama", dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                         num_attention_heads=24, num_key_value_heads=8, vocab_size=128256)),
}


def _known_config(name: str):
    from transformers import AutoConfig

    model_type, values = KNOWN_CONFIGS[name]
    config = AutoConfig.for_model(model_type, tie_word_embeddings=True, **values)  # all five tie their head
    config._name_or_path = name
    return config


def model_config(name_or_path: str, *, trust_remote_code: bool = False):
    """The ``PretrainedConfig`` of a model name or folder, without touching the network."""
    from transformers import AutoConfig, GPT2Config

    short = name_or_path.removeprefix("openai-community/").removeprefix("distilbert/")
    if short in KNOWN_GPT2:
        config = GPT2Config(**KNOWN_GPT2[short])
        config._name_or_path = name_or_path
        return config
    if name_or_path in KNOWN_CONFIGS and not Path(name_or_path).exists():
        return _known_config(name_or_path)
    if name_or_path == "theta-tiny":
        from theta_ai.model.load import theta_tiny_config, theta_tiny_model_config

        # the trained tokenizer has at most vocab_size_target tokens
        config = theta_tiny_model_config(theta_tiny_config()["vocab_size_target"])
        config._name_or_path = name_or_path
        return config
    from theta_ai.model.gguf import check_gguf_package, find_gguf

    gguf_file = find_gguf(name_or_path)
    if gguf_file is not None:  # the config a GGUF file carries (read without dequantizing a tensor)
        check_gguf_package(gguf_file)
        return AutoConfig.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    path = Path(name_or_path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{name_or_path} holds no config.json; point at a model folder written by "
                              f"save_pretrained or theta-train")
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ConfigError(f"{name_or_path} does not exist; check the path")
    try:
        return AutoConfig.from_pretrained(name_or_path, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception:
        raise ConfigError(f"--plan needs the config of {name_or_path!r}, which is not in the local Hugging Face "
                          f"cache and is never downloaded by the planner: pass a local model folder, or one of "
                          f"{', '.join([*KNOWN_GPT2, *KNOWN_CONFIGS])}, theta-tiny") from None


@dataclass(frozen=True)
class ModelStats:
    """Exact counts from the model built on the meta device."""

    parameters: int  # unique parameters (tied weights counted once)
    matmul_weights: int  # unique weights of linear layers and the LM head (what autocast copies)
    linears: tuple[tuple[str, int, int], ...]  # (module name, in_features, out_features), LM head included
    output_layer: str  # name of the LM head module

    def targeted(self, target_modules) -> list[tuple[str, int, int]]:
        """The linear layers peft's LoRA would wrap for ``target_modules``."""
        return [lin for lin in self.linears if _peft_match(lin[0], target_modules, self.output_layer)]


def _peft_match(name: str, target_modules, output_layer: str) -> bool:
    # all-linear as peft's _maybe_include_all_linear_layers resolves it (theta-train's default): every Linear and
    # Conv1D (``linears``) but the output embeddings
    if target_modules == "all-linear":
        return name != output_layer
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return name in target_modules or any(name.endswith("." + t) for t in target_modules)


_LAYER = re.compile(r"^(.*?)\.(\d+)\.(.+)$")


def lora_targets(stats: ModelStats, target_modules) -> tuple[dict[str, int], dict[str, int]]:
    """The linear layers LoRA targets, with their input widths: those of the first decoder layer by their
    name inside the layer (``attn.c_attn``), and those outside the decoder layers by full name (``lm_head``)."""
    targeted = stats.targeted(target_modules)
    if not targeted:
        raise ConfigError(f"LoRA target_modules {target_modules!r} match no linear layer of this model "
                          f"(its linear layers include {', '.join(n for n, _, _ in stats.linears[:6])})")
    in_layer, outside = {}, {}
    for name, fin, _ in targeted:
        match = _LAYER.match(name)
        if match is None:
            outside[name] = fin
        elif match.group(2) == "0":
            in_layer[match.group(3)] = fin
    return in_layer, outside


_STATS: dict[str, ModelStats] = {}


def model_stats(config) -> ModelStats:
    """Count the parameters of ``config``'s causal LM on the meta device (cached per config)."""
    key = type(config).__name__ + config.to_json_string(use_diff=False)
    if key not in _STATS:
        _STATS[key] = _count(config)
    return _STATS[key]


def _count(config) -> ModelStats:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=torch.float32)
    except Exception as exc:
        raise ConfigError(f"cannot build a causal LM from this {type(config).__name__} to count its parameters "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    output = model.get_output_embeddings()
    output_name = next((n for n, m in model.named_modules() if m is output), "lm_head")
    linears, matmul = [], {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            fin, fout = module.in_features, module.out_features
        elif isinstance(module, Conv1D):  # GPT-2's transposed linear layer: weight is (in, out)
            fin, fout = module.weight.shape
        else:
            continue
        linears.append((name, int(fin), int(fout)))
        matmul[id(module.weight)] = module.weight.numel()
    parameters = sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once
    return ModelStats(parameters, sum(matmul.values()), tuple(linears), output_name)
