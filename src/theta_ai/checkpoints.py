"""Checkpoint folders on disk: names, atomic publishing, discovery for resume, rotation.

Layout of a checkpoint folder (``--checkpoint-dir``, default ``models/``)::

    theta_checkpoint_epoch_1/   full Trainer checkpoint (weights, tokenizer, optimizer, scheduler, RNG, state)
    theta_checkpoint_epoch_2/
    theta_checkpoint_step_57/   only when a run was stopped mid-epoch (SIGTERM, Ctrl+C); superseded by the next epoch
    theta_best/                 weights + tokenizer of the best epoch, and theta_best.json naming it
    theta_final/                weights + tokenizer at the end of training

A folder is written under a temporary name, every file is fsynced, and only then is it renamed
to its final name: a crash during a save never leaves a folder that *looks* complete. Temporary
folders left by a crash are removed, with a log line, when the next run starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

logger = logging.getLogger("theta_ai")

EPOCH_PREFIX = "theta_checkpoint_epoch_"
STEP_PREFIX = "theta_checkpoint_step_"
BEST_DIR = "theta_best"
FINAL_DIR = "theta_final"
BEST_INFO = "theta_best.json"
RUN_INFO = "theta_run.json"
VALIDATION_FILE = "theta_validation.jsonl"
STAGING_SUFFIX = ".incomplete"
_EPOCH_RE = re.compile(rf"^{EPOCH_PREFIX}(\d+)$")
_STEP_RE = re.compile(rf"^{STEP_PREFIX}(\d+)$")
# Trainer's own staging name (it writes checkpoint-<step>; ThetaTrainer renames it when complete).
_TRAINER_STAGING_RE = re.compile(r"^checkpoint-\d+$")
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "adapter_config.json",
               "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "chat_template.jinja", "vocab.json", "merges.txt", RUN_INFO, VALIDATION_FILE)


def epoch_dir_name(epoch: int) -> str:
    return f"{EPOCH_PREFIX}{epoch}"


def fsync_tree(path: Path) -> None:
    """Flush every file and folder under ``path`` to disk (no-op where folders cannot be opened)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(staging: Path, final: Path) -> Path:
    """Atomically make ``staging`` visible as ``final``, replacing an older ``final`` if present.

    The old folder is first moved aside to ``<final>.old``; :func:`recover` puts it back if a crash
    strikes between the two renames, so ``final`` is never lost.
    """
    fsync_tree(staging)
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)
    return final


def recover(checkpoint_dir: str | Path) -> list[str]:
    """Undo what a crash mid-save left behind; returns one log line per action."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    lines = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue
        if entry.name.endswith(".old"):
            target = entry.with_name(entry.name[: -len(".old")])
            if not target.exists():
                os.replace(entry, target)
                lines.append(f"restored {target} from {entry.name} (a crash interrupted its replacement)")
            else:
                shutil.rmtree(entry)
                lines.append(f"removed {entry} (left over from an interrupted replacement)")
        elif entry.name.endswith(STAGING_SUFFIX) or _TRAINER_STAGING_RE.match(entry.name):
            shutil.rmtree(entry)
            lines.append(f"removed incomplete checkpoint {entry} (a crash interrupted its save)")
    return lines


def _complete(checkpoint_dir: str | Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    """Folders named by ``pattern`` (its number first) that hold a trainer state, sorted by that number."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = pattern.match(entry.name)
        if match and entry.is_dir() and (entry / "trainer_state.json").is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def epoch_checkpoints(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete epoch checkpoints in ``checkpoint_dir``, oldest first."""
    return _complete(checkpoint_dir, _EPOCH_RE)


def step_checkpoints(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete mid-epoch checkpoints (written when a run was stopped), by global step."""
    return _complete(checkpoint_dir, _STEP_RE)


def global_step_of(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "trainer_state.json").read_text()).get("global_step", 0))


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The complete checkpoint (epoch or mid-epoch) with the highest global step, or None."""
    candidates = [p for _, p in epoch_checkpoints(checkpoint_dir)] + [p for _, p in step_checkpoints(checkpoint_dir)]
    return max(candidates, key=global_step_of, default=None)


def checkpoint_name(epoch: float, global_step: int) -> str:
    """``theta_checkpoint_epoch_N`` at the end of epoch N, ``theta_checkpoint_step_S`` in the middle of one."""
    if abs(epoch - round(epoch)) < 1e-6:
        return epoch_dir_name(round(epoch))
    return f"{STEP_PREFIX}{global_step}"


def remove_superseded_step_checkpoints(checkpoint_dir: str | Path, global_step: int) -> list[Path]:
    """Mid-epoch checkpoints only matter until a later epoch checkpoint exists."""
    removed = [p for step, p in step_checkpoints(checkpoint_dir) if step < global_step]
    for path in removed:
        shutil.rmtree(path)
    return removed


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class DiskSpaceError(RuntimeError):
    """Not enough free disk space for the next checkpoint; nothing was written."""


def ensure_free_space(checkpoint_dir: str | Path, needed: int) -> None:
    """Raise :class:`DiskSpaceError` when ``checkpoint_dir`` has less than ``needed`` bytes free."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < needed:
        raise DiskSpaceError(
            f"only {free / 2**20:.0f} MiB free in {root}/, but the next checkpoint needs about {needed / 2**20:.0f} MiB; "
            "training stopped before writing it, and the earlier checkpoints are intact. Free some space (or use "
            "--save-total-limit N), then continue with --resume auto")


def rotate(checkpoint_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` epoch checkpoints (theta_best/theta_final are separate folders)."""
    if not keep:
        return []
    found = epoch_checkpoints(checkpoint_dir)
    removed = [path for _, path in found[:-keep]]
    for path in removed:
        shutil.rmtree(path)
    return removed


def copy_model_files(source: Path, staging: Path) -> None:
    """Copy the files needed to load the model (not optimizer/RNG state) into ``staging``."""
    staging.mkdir(parents=True)
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, staging / name)
    for extra in source.glob("model-*.safetensors"):
        shutil.copy2(extra, staging / extra.name)
    if (source / "model.safetensors.index.json").is_file():
        shutil.copy2(source / "model.safetensors.index.json", staging / "model.safetensors.index.json")


OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt")


def publish_best(checkpoint: Path, best_dir: Path, info: dict, with_optimizer: bool = False) -> Path:
    """Replace ``theta_best`` atomically with the model files of ``checkpoint`` plus ``theta_best.json``.

    ``with_optimizer`` also keeps the optimizer/scheduler state (the spike guard rolls back to it).
    """
    staging = best_dir.with_name(best_dir.name + STAGING_SUFFIX)
    if staging.exists():
        shutil.rmtree(staging)
    copy_model_files(checkpoint, staging)
    if with_optimizer:
        for name in OPTIMIZER_FILES:
            if (checkpoint / name).is_file():
                shutil.copy2(checkpoint / name, staging / name)
    (staging / BEST_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return publish(staging, best_dir)


def read_run_info(folder: str | Path) -> dict:
    """The ``theta_run.json`` that theta-train writes into every model folder, or ``{}``."""
    path = Path(folder) / RUN_INFO
    return json.loads(path.read_text()) if path.is_file() else {}
