"""Load a saved model folder's weights into a live model, strictly.

``save_pretrained`` writes either one ``model.safetensors`` or, for a big model, shards
(``model-00001-of-0000N.safetensors`` ...) plus ``model.safetensors.index.json``. :func:`load_saved_weights`
reads both and refuses a folder whose keys or shapes do not match the model, before anything is
loaded: a wrong or partial file never "restores" silently, and a failed load leaves the model as it was.

transformers' ``trainer_utils.load_sharded_checkpoint`` does not fit: its strict mode counts a tied
``lm_head.weight`` (stored once by ``save_pretrained``) as missing, it checks the index's key list
rather than what the shards hold, and it reads no single-file folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from theta_ai.errors import WeightLoadError  # noqa: F401 (defined in errors.py)

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
ADAPTER_FILE = "adapter_model.safetensors"
_SHOWN = 5  # keys named per list in an error; the rest are counted


def has_saved_weights(folder: str | Path) -> bool:
    """Whether ``folder`` holds model weights: one file, a shard index, or a LoRA adapter."""
    folder = Path(folder)
    return any((folder / name).is_file() for name in (SINGLE_FILE, INDEX_FILE, ADAPTER_FILE))


def model_weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a full model folder: ``model.safetensors`` or every shard its index names."""
    folder = Path(folder)
    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    index = folder / INDEX_FILE
    if not index.is_file():
        raise WeightLoadError(f"cannot load the weights in {folder}: it has no {SINGLE_FILE} and no {INDEX_FILE}")
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise WeightLoadError(f"cannot load the weights in {folder}: {INDEX_FILE} is unreadable ({exc!r})") from exc
    for shard in shards:
        if not (folder / shard).is_file():
            raise WeightLoadError(f"cannot load the weights in {folder}: {shard}, named in {INDEX_FILE}, is missing")
    return [folder / shard for shard in shards]


def _names(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:_SHOWN])
    return shown if len(keys) <= _SHOWN else f"{shown}, ... ({len(keys)} in all)"


def _tied_away(expected: dict, saved_keys: set[str]) -> set[str]:
    """Keys of ``expected`` (a live state dict) that share their tensor with a key in ``saved_keys``.

    Ties are read off the live model -- two state-dict entries backed by the same memory (same
    device, data pointer, shape and stride) -- rather than off transformers' ``_tied_weights_keys``:
    that works for any ``nn.Module`` (a PEFT wrapper's prefixed names, remote code), and only a tie
    that really exists now counts, so a model built with ``tie_word_embeddings=False`` must have its
    ``lm_head.weight`` in the files. Loading the saved key writes the shared memory, which restores
    every name tied to it. Empty and meta tensors (data pointer 0) never count as tied.
    """
    def where(t):
        return (t.device, t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)

    loaded = {where(expected[k]) for k in saved_keys if k in expected and expected[k].data_ptr() != 0}
    return {k for k, t in expected.items() if k not in saved_keys and t.data_ptr() != 0 and where(t) in loaded}


def load_saved_weights(model, folder: str | Path) -> list[Path]:
    """Load the weights in ``folder`` (one file or every shard) into ``model``; returns the files read.

    Raises :class:`WeightLoadError` -- before loading anything -- on a missing file or shard, a key in
    the files that the model does not have, a model key the files do not have (unless it is tied to
    a saved one, like GPT-2's ``lm_head.weight``, which ``save_pretrained`` stores once), or a shape
    that differs. Tensors are read to CPU one file at a time and copied into the model's parameters
    in place, so a rollback on a GPU needs no second copy of the weights in GPU memory.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    files = model_weight_files(folder)
    saved_shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                saved_shapes[key] = tuple(fh.get_slice(key).get_shape())
    expected = model.state_dict()
    saved = set(saved_shapes)
    unexpected = saved - set(expected)
    missing = set(expected) - saved - _tied_away(expected, saved)
    problems = []
    if unexpected:
        problems.append(f"unexpected key(s) {_names(unexpected)}")
    if missing:
        problems.append(f"missing key(s) {_names(missing)}")
    problems += [f"{k!r} has shape {saved_shapes[k]} in the files but {tuple(expected[k].shape)} in the model"
                 for k in sorted(saved & set(expected)) if saved_shapes[k] != tuple(expected[k].shape)]
    if problems:
        raise WeightLoadError(f"cannot load the weights in {folder} into {type(model).__name__}: "
                              + "; ".join(problems))
    del expected
    for path in files:  # strict=False: each shard holds only part of the keys; the whole was checked above
        model.load_state_dict(load_file(str(path), device="cpu"), strict=False)
    return files
