"""Model folders on disk: theta_ai's folder names, the files it adds, and atomic publishing.

A folder is written under a temporary name (``<name>.incomplete``), every file is fsynced, and only then
is it renamed to its final name, so a crash never leaves a folder that *looks* complete. Training
checkpoints (:mod:`theta_ai.training.checkpoints`), the LoRA base and theta-eval all use these names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path



EPOCH_PREFIX = "theta_checkpoint_epoch_"
STEP_PREFIX = "theta_checkpoint_step_"
BEST_DIR = "theta_best"
FINAL_DIR = "theta_final"
BEST_INFO = "theta_best.json"
RUN_INFO = "theta_run.json"
VALIDATION_FILE = "theta_validation.jsonl"
STAGING_SUFFIX = ".incomplete"
BASE_DIR = "theta_base"  # the saved base model of a theta-tiny LoRA run


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


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` where the file system allows (no bytes written), else copy it.

    Safe because no file of a published checkpoint is ever rewritten in place: every save writes a
    new folder, and replacing a folder renames it.
    """
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def read_run_info(folder: str | Path) -> dict:
    """The ``theta_run.json`` that theta-train writes into every model folder, or ``{}``."""
    path = Path(folder) / RUN_INFO
    return json.loads(path.read_text()) if path.is_file() else {}
