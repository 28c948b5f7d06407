"""GGUF files as a starting point: ``--model-name model.gguf``, or a folder holding exactly one ``.gguf`` file.

transformers reads the file (``from_pretrained(folder, gguf_file=name)``, for the model and for the tokenizer,
whose vocabulary, merges, special tokens and chat template the file carries) and dequantizes every tensor into
a plain float32 model. Training then runs on ordinary weights, and every checkpoint is an ordinary safetensors
folder that ``AutoModelForCausalLM.from_pretrained`` loads without any GGUF support. A LoRA run on a GGUF base
saves the dequantized base once to ``<checkpoint-dir>/theta_base/`` (as for theta-tiny), so its adapter
checkpoints evaluate and merge without the file.

Reading the file needs the optional ``gguf`` package: ``pip install "theta_ai[gguf]"``.

    theta-train --data data/ --model-name models/qwen2.5-0.5b-instruct-q8_0.gguf
    theta-eval --model-path models/qwen2.5-0.5b-instruct-q8_0.gguf --data val.json

Which architectures and tokenizers transformers converts is its own list (``transformers.integrations.ggml``
and ``transformers.integrations.gguf``: llama, mistral, qwen2, qwen3, phi3, gemma, gpt2, ...; byte-level "gpt2"
and sentencepiece "llama" tokenizers); a file outside it is a one-line error naming its architecture.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from theta_ai.errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger("theta_ai")

GGUF_SUFFIX = ".gguf"
INSTALL_HINT = 'pip install "theta_ai[gguf]"'
GGUF_MIN_VERSION = "0.10"  # what transformers' GGUF reader asks for (GGUF_MIN_VERSION in transformers.utils)
# A folder with one of these is an ordinary model folder or an adapter folder, even with a .gguf file beside it.
_MODEL_FOLDER_FILES = ("config.json", "adapter_config.json")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def find_gguf(name_or_path: str | Path) -> Path | None:
    """The GGUF file ``name_or_path`` names, or ``None`` when it names no GGUF (a hub id, a model folder).

    A path ending in ``.gguf`` must be that file; a folder without ``config.json`` that holds ``.gguf`` files
    must hold exactly one. Anything else raises a :class:`ModelLoadError` saying what was found.
    """
    shown = str(name_or_path)
    path = Path(name_or_path).expanduser()
    named_gguf = path.suffix.lower() == GGUF_SUFFIX
    if named_gguf and path.is_file():
        return path
    if named_gguf and not path.exists():
        raise ModelLoadError(f"{shown} does not exist; check the path to the .gguf file")
    if not path.is_dir() or any((path / name).is_file() for name in _MODEL_FOLDER_FILES):
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == GGUF_SUFFIX and p.is_file())
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ModelLoadError(f"{shown} holds {len(found)} .gguf files ({', '.join(p.name for p in found)}) and no "
                             f"config.json; name the one to load, e.g. {path / found[0].name}")
    if named_gguf:
        raise ModelLoadError(f"{shown} is a folder holding no .gguf file; point at the .gguf file itself")
    return None


def check_gguf_package(file: Path) -> None:
    """A :class:`ModelLoadError` naming the pip command when the ``gguf`` package is missing or too old."""
    try:
        import gguf  # noqa: F401 (transformers imports it itself; this only checks it is there)
    except ImportError:
        raise ModelLoadError(f"{file}: reading a GGUF file needs the gguf package, which is not installed; "
                             f"install it with: {INSTALL_HINT}") from None
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        installed = version("gguf")
    except PackageNotFoundError:  # imported from a source checkout: nothing to compare
        return
    if Version(installed) < Version(GGUF_MIN_VERSION):
        raise ModelLoadError(f"{file}: gguf {installed} is too old to read GGUF files with transformers (needs "
                             f">= {GGUF_MIN_VERSION}); upgrade it with: pip install -U \"theta_ai[gguf]\"")


def tensor_types(file: Path) -> Counter:
    """``Counter({"Q8_0": 6, "F32": 14})``: how the file stores its tensors. A file gguf cannot read raises."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(file))
        return Counter(tensor.tensor_type.name for tensor in reader.tensors)
    except Exception as exc:
        raise ModelLoadError(f"{file} is not a readable GGUF file ({_first_line(exc)}); it may be truncated or "
                             "not a GGUF file at all: download or convert it again") from None


def _torch_dtype(dtype):
    import torch

    if dtype is None or dtype == "auto":
        return torch.float32  # the weights train in float32 (mixed precision keeps float32 master weights)
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def load_gguf_tokenizer(file: Path) -> "PreTrainedTokenizerBase":
    """The tokenizer the file's metadata describes (vocabulary, merges, special tokens, chat template)."""
    check_gguf_package(file)
    tensor_types(file)  # a truncated or foreign file: the same one-line error as for the model
    return _read_tokenizer(file)


def _read_tokenizer(file: Path) -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(file.parent.resolve()), gguf_file=file.name)
    except Exception as exc:
        raise ModelLoadError(f"{file}: transformers cannot build a tokenizer from this GGUF file "
                             f"({_first_line(exc)})") from None


def load_gguf(file: Path, shown: str | None = None, dtype=None) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase", str]:
    """``(model, tokenizer, source)``: the file dequantized into a plain transformers model, with its tokenizer.

    ``source`` describes the model for the banner. Logs one line saying the weights were dequantized.
    """
    from transformers import AutoModelForCausalLM, GgufConfig

    shown = shown or str(file)
    check_gguf_package(file)
    types = tensor_types(file)
    torch_dtype = _torch_dtype(dtype)
    try:
        # dequantize=True: a plain model, with no quantizer attached (transformers' GGUF quantizer marks the model
        # as not trainable and not serializable, so Trainer and save_pretrained would refuse it)
        model = AutoModelForCausalLM.from_pretrained(str(file.parent.resolve()), gguf_file=file.name,
                                                     dtype=torch_dtype,
                                                     quantization_config=GgufConfig(dequantize=True))
    except Exception as exc:
        raise ModelLoadError(f"{file}: transformers cannot load this GGUF file as a causal language model "
                             f"({_first_line(exc)})") from None
    tokenizer = _read_tokenizer(file)
    dtype_name = str(torch_dtype).removeprefix("torch.")
    stored = ", ".join(f"{name} x{count}" for name, count in types.most_common())
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    logger.warning("%s: GGUF file dequantized to %s by transformers (its tensors: %s), %s in memory as a plain "
                   "model; checkpoints are written as safetensors", shown, dtype_name, stored, _format_size(size))
    return model, tokenizer, f"{shown}, GGUF dequantized to {dtype_name}"


def _format_size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"
