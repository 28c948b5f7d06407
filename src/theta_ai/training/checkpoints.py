"""Checkpoint folders on disk: names, atomic publishing, discovery for resume, rotation.

Layout of a checkpoint folder (``--checkpoint-dir``, default ``models/``)::

    theta_checkpoint_epoch_1/   full Trainer checkpoint (weights, tokenizer, optimizer, scheduler, RNG, state)
    theta_checkpoint_epoch_2/
    theta_checkpoint_step_57/   only when a run was stopped mid-epoch (SIGTERM, Ctrl+C); superseded by the next epoch
    theta_best/                 weights + tokenizer of the best epoch, and theta_best.json naming it
    theta_final/                weights + tokenizer at the end of training

A folder is written under a temporary name, every file is fsynced, and only then is it renamed
to its final name: a crash during a save never leaves a folder that *looks* complete. Temporary
folders left by a crash are removed, with a log line, when the next run starts -- only names that
theta_ai itself writes (``theta_*.incomplete``, ``theta_*.old`` and Trainer staging folders
``checkpoint-N`` that carry theta_ai's :data:`STAGING_MARKER`); a plain Trainer run's ``checkpoint-N``
folders and anything else in the folder are never touched.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

from theta_ai.training.disk import DiskSpaceError, ensure_free_space, folder_size, is_disk_full  # noqa: F401 (re-exported)
from theta_ai.model.folders import (BASE_DIR, BEST_DIR, BEST_INFO, EPOCH_PREFIX, FINAL_DIR, RUN_INFO,  # noqa: F401
    STAGING_SUFFIX, STEP_PREFIX, VALIDATION_FILE, epoch_dir_name, fsync_tree, link_or_copy, publish, read_run_info)


logger = logging.getLogger("theta_ai")
_EPOCH_RE = re.compile(rf"^{EPOCH_PREFIX}(\d+)$")
_STEP_RE = re.compile(rf"^{STEP_PREFIX}(\d+)$")
# Trainer's own staging name (it writes checkpoint-<step>; ThetaTrainer renames it when complete).
# ThetaTrainer creates the folder with this marker file *before* Trainer writes into it, so recovery
# can tell its own interrupted saves from another tool's checkpoint-N folders.
_TRAINER_STAGING_RE = re.compile(r"^checkpoint-\d+$")
STAGING_MARKER = ".theta_staging"
# Names theta_ai publishes; only these may have a ``.old`` / ``.incomplete`` twin that recovery handles.
_OWN_NAME_RE = re.compile(rf"^({EPOCH_PREFIX}\d+|{STEP_PREFIX}\d+|{BEST_DIR}|{FINAL_DIR}|{BASE_DIR})$")
# Training state that only resuming needs: never copied into theta_best / theta_final.
TRAINING_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin",
                        STAGING_MARKER)
_TRAINING_STATE_RE = re.compile(r"^rng_state(_\d+)?\.pth$")


def recover(checkpoint_dir: str | Path, dry_run: bool = False) -> list[str]:
    """Undo what a crash mid-save left behind; returns one log line per action.

    Only names theta_ai writes are touched (see the module docstring). With ``dry_run`` nothing is
    changed and the lines say what a real run would do.
    """
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    lines = []
    removed = "would remove" if dry_run else "removed"
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue
        name = entry.name
        if name.endswith(".old") and _OWN_NAME_RE.match(name[: -len(".old")]):
            target = entry.with_name(name[: -len(".old")])
            if not target.exists():
                if not dry_run:
                    os.replace(entry, target)
                lines.append(f"{'would restore' if dry_run else 'restored'} {target} from {name} "
                             "(a crash interrupted its replacement)")
            else:
                if not dry_run:
                    shutil.rmtree(entry)
                lines.append(f"{removed} {entry} (left over from an interrupted replacement)")
        elif ((name.endswith(STAGING_SUFFIX) and _OWN_NAME_RE.match(name[: -len(STAGING_SUFFIX)]))
              or (_TRAINER_STAGING_RE.match(name) and (entry / STAGING_MARKER).is_file())):
            if not dry_run:
                shutil.rmtree(entry)
            lines.append(f"{removed} incomplete checkpoint {entry} (a crash interrupted its save)")
    return lines


def mark_staging(staging: Path) -> None:
    """Create Trainer's staging folder with theta_ai's marker before anything is written into it."""
    staging.mkdir(parents=True, exist_ok=True)
    (staging / STAGING_MARKER).write_text("written by theta_ai; removed when the save completes\n")


def unmark(folder: Path) -> None:
    (folder / STAGING_MARKER).unlink(missing_ok=True)


def _named(checkpoint_dir: str | Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    """Folders named by ``pattern`` (its number first), sorted by that number, complete or not."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = pattern.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def _complete(checkpoint_dir: str | Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    """Named folders that pass :func:`checkpoint_problem`, sorted by their number."""
    return [(n, p) for n, p in _named(checkpoint_dir, pattern) if checkpoint_problem(p) is None]


def epoch_checkpoints(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete epoch checkpoints in ``checkpoint_dir``, oldest first."""
    return _complete(checkpoint_dir, _EPOCH_RE)


def step_checkpoints(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete mid-epoch checkpoints (written when a run was stopped), by global step."""
    return _complete(checkpoint_dir, _STEP_RE)


def global_step_of(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text()).get("global_step", 0))


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint (epoch or mid-epoch) with the highest global step, or None.

    Not ``transformers.trainer_utils.get_last_checkpoint``: it only knows ``checkpoint-N`` names (which
    theta_ai uses for unfinished staging folders only), orders by the number in the name (an epoch
    number here, a step number in ``theta_checkpoint_step_S``) and cannot tell a truncated folder from a
    whole one (checked against transformers 5.24).
    """
    candidates = [p for _, p in epoch_checkpoints(checkpoint_dir)] + [p for _, p in step_checkpoints(checkpoint_dir)]
    return max(candidates, key=global_step_of, default=None)


def resume_point(checkpoint_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The checkpoint ``--resume auto`` continues from, and one line per newer checkpoint that is damaged.

    A damaged folder (truncated weights, missing or unreadable trainer state, ...) is left on disk
    untouched; the next save of the same name replaces it.
    """
    newest = latest_checkpoint(checkpoint_dir)
    newest_step = global_step_of(newest) if newest is not None else -1
    notes = []
    for _, folder in _named(checkpoint_dir, _EPOCH_RE) + _named(checkpoint_dir, _STEP_RE):
        problem = checkpoint_problem(folder)
        if problem is None:
            continue
        try:
            step = global_step_of(folder)
        except (OSError, ValueError):
            step = None
        if step is None or step > newest_step:
            notes.append(f"--resume auto: {folder} is damaged ({problem}); "
                         + (f"resuming from {newest.name}, the newest complete checkpoint" if newest
                            else "no complete checkpoint is left, starting a fresh run"))
    return newest, notes


def own_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Every checkpoint-like folder theta_ai writes (epoch, mid-epoch, best, final), complete or not."""
    root = Path(checkpoint_dir)
    found = [p for _, p in _named(root, _EPOCH_RE) + _named(root, _STEP_RE)]
    found += [root / name for name in (BEST_DIR, FINAL_DIR) if (root / name).is_dir()]
    return found


# ---------------------------------------------------------------------------- is a folder complete?


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from, or None when it is a complete Trainer checkpoint.

    Checks what a crash or a full disk damages: the trainer state parses, the weights (single file,
    shards or adapter) are whole safetensors files, and the optimizer and scheduler state are whole
    ``torch.save`` archives. Cheap: headers and sizes only, nothing is loaded.
    """
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        json.loads(state.read_text())
    except (ValueError, OSError) as exc:
        return f"trainer_state.json unreadable: {exc}"
    weights = weight_files(folder)
    if not weights:
        return "no model.safetensors or adapter_model.safetensors"
    for path in weights:
        problem = safetensors_problem(path)
        if problem:
            return f"{path.name} {problem}"
    for name in ("optimizer.pt", "scheduler.pt"):
        path = folder / name
        if not path.is_file():
            return f"no {name}"
        if not zipfile.is_zipfile(path):
            return f"{name} is truncated or not a torch.save archive"
    return None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files holding a folder's weights: adapter, single file, or every shard of the index."""
    for single in ("adapter_model.safetensors", "model.safetensors"):
        if (folder / single).is_file():
            return [folder / single]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, OSError):
            return [index]  # reported as damaged below (not a safetensors file)
        return [folder / shard for shard in shards]
    return []


def safetensors_problem(path: Path) -> str | None:
    """None when ``path`` is a whole safetensors file (header parses, size matches the header)."""
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > size - 8:
                return f"is truncated ({size} bytes, header alone claims {header_len})"
            header = json.loads(fh.read(header_len))
    except (struct.error, ValueError, OSError) as exc:
        return f"has an unreadable header ({exc})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size != 8 + header_len + end:
        return f"is truncated ({size} bytes of {8 + header_len + end})"
    return None


def checkpoint_name(epoch: float, global_step: int) -> str:
    """``theta_checkpoint_epoch_N`` at the end of epoch N, ``theta_checkpoint_step_S`` in the middle of one."""
    if abs(epoch - round(epoch)) < 1e-6:
        return epoch_dir_name(round(epoch))
    return f"{STEP_PREFIX}{global_step}"


def remove_superseded_step_checkpoints(checkpoint_dir: str | Path, global_step: int) -> list[Path]:
    """Mid-epoch checkpoints (damaged ones too) only matter until a later epoch checkpoint exists."""
    removed = [p for step, p in _named(checkpoint_dir, _STEP_RE) if step < global_step]
    for path in removed:
        shutil.rmtree(path)
    return removed


def rotate(checkpoint_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` epoch checkpoints (theta_best/theta_final are separate folders).

    ``keep`` None or 0 keeps every epoch checkpoint (``--save-total-limit all``).
    """
    if not keep:
        return []
    found = epoch_checkpoints(checkpoint_dir)
    removed = [path for _, path in found[:-keep]]
    for path in removed:
        shutil.rmtree(path)
    return removed


def is_training_state(name: str) -> bool:
    return name in TRAINING_STATE_FILES or bool(_TRAINING_STATE_RE.match(name))


def copy_model_files(source: Path, staging: Path, keep: tuple[str, ...] = ()) -> None:
    """Put every file of the model folder ``source`` except its training state into ``staging``.

    Everything a model folder may need to load comes along (``tokenizer.model``, ``added_tokens.json``,
    the ``*.py`` of ``--trust-remote-code`` models, shards and their index, theta_ai's run files); only
    optimizer, scheduler, scaler, RNG and trainer state stay behind, except the names in ``keep``.
    Files are hard-linked where possible: publishing a 1 GB model every epoch costs no copy.
    """
    staging.mkdir(parents=True)
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir():
            (staging / relative).mkdir(exist_ok=True)
        elif not is_training_state(path.name) or path.name in keep:
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(path, staging / relative)


OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt")


def publish_best(checkpoint: Path, best_dir: Path, info: dict, with_optimizer: bool = False) -> Path:
    """Replace ``theta_best`` atomically with the model files of ``checkpoint`` plus ``theta_best.json``.

    ``with_optimizer`` also keeps the optimizer/scheduler state (the spike guard rolls back to it).
    """
    staging = best_dir.with_name(best_dir.name + STAGING_SUFFIX)
    if staging.exists():
        shutil.rmtree(staging)
    copy_model_files(checkpoint, staging, keep=OPTIMIZER_FILES if with_optimizer else ())
    (staging / BEST_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return publish(staging, best_dir)


def read_best_info(checkpoint_dir: str | Path) -> dict:
    path = Path(checkpoint_dir) / BEST_DIR / BEST_INFO
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}
