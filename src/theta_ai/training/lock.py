"""One training run per checkpoint folder at a time.

theta-train holds an exclusive, advisory lock on the checkpoint folder itself from the moment it
resolves the folder until training ends: ``fcntl.flock`` on the open folder (Linux, macOS), or
``msvcrt.locking`` on a ``.theta_lock`` file inside it on Windows, where folders cannot be opened. A
second run started on the same folder is refused at once. The lock is the operating system's, so it
goes away with the process that held it: a run killed with ``kill -9`` or by a power cut leaves no
stale lock behind, and no lock file is written where it is not needed.

Within one process the lock is re-entrant (a notebook may prepare the same run twice); in a
multi-process run only the main process takes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from theta_ai.errors import RunLockedError  # noqa: F401 (defined in errors.py)

LOCK_FILE = ".theta_lock"  # Windows only

_held: dict[Path, "RunLock"] = {}


class RunLock:
    def __init__(self, path: Path, handle):
        self.path, self._handle, self.count = path, handle, 1

    def release(self) -> None:
        """Drop one hold; the lock is released when the last one goes."""
        self.count -= 1
        if self.count > 0 or self._handle is None:
            return
        _held.pop(self.path.parent, None)
        try:
            _unlock(self._handle)
        finally:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(checkpoint_dir: str | Path) -> RunLock:
    """Lock ``checkpoint_dir`` for this process, creating the folder; raise :class:`RunLockedError` if taken."""
    root = Path(checkpoint_dir).resolve()
    if root in _held:
        _held[root].count += 1
        return _held[root]
    root.mkdir(parents=True, exist_ok=True)
    handle = _open(root)
    if not _try_lock(handle):
        handle.close()
        raise RunLockedError(
            f"{checkpoint_dir}/ is in use by another theta-train run that is still running; wait for it to finish "
            "or stop it, or write this run elsewhere with --checkpoint-dir")
    lock = RunLock(root / LOCK_FILE, handle)
    _held[root] = lock
    return lock


class _FolderHandle:
    """An open folder (POSIX): what ``flock`` locks when no lock file is wanted."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        os.close(self.fd)


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _open(root: Path):
        return open(root / LOCK_FILE, "a+", encoding="utf-8")

    def _try_lock(handle) -> bool:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(handle) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _open(root: Path):
        return _FolderHandle(root)

    def _try_lock(handle) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
