"""Keep freed host memory for reuse while training on a CPU (glibc's ``mallopt``).

glibc gives every allocation above its mmap threshold (at most 32 MiB) its own ``mmap`` and returns it to the
kernel with ``munmap`` the moment it is freed. A training step on a CPU makes the same large tensors every
micro-batch (GPT-2 124M: the LM head's and the tied embedding's 154 MB weight gradients, the logits), so each of
them is page-faulted in afresh every time: about a fifth of a GPT-2 124M step on a 2-core Xeon
(``benchmarks/host_allocator.py``). With ``M_MMAP_MAX = 0`` every allocation comes from the heap, and with
``M_TRIM_THRESHOLD`` at 1 GiB the freed top of the heap stays mapped, so the next micro-batch reuses the pages.
After each optimizer step the free pages go back to the kernel (:func:`trim_kept_host_memory`), which bounds the
heap: freed blocks of one size do not always fit the next request, and without the trim a bf16 run's heap grew
every step.
Neither setting alone helps (measured); together, with the trim below, theta's epochs were 1.08-1.12x faster
for 1-26% more peak resident memory on a 2-core Intel Xeon, and 0.98-1.07x for 4-9% more on a 2-core AMD EPYC
(benchmarks/README.md), so it is opt-in (``--reuse-host-memory``).

The same effect is open to any program through the environment (``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=...``); a user who sets those, or glibc's malloc tunables, keeps them: theta_ai then leaves
the allocator alone. Elsewhere (macOS, Windows, musl) both functions do nothing. :func:`return_freed_host_memory`
puts glibc's default limits back and hands the kept memory to the kernel (``malloc_trim``), so a notebook that goes
on after training gets its memory back.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # malloc.h
KEEP_TRIM_THRESHOLD = 1 << 30  # freed heap kept up to 1 GiB (the value is a C int)
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's own defaults
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")

_active = False


def _glibc():
    """The C library as ctypes sees it, when it is glibc on Linux; else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def user_allocator_settings() -> list[str]:
    """The glibc allocator settings this process's environment makes (theta_ai then leaves the allocator alone)."""
    found = [name for name in USER_SETTINGS if name in os.environ]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        found.append("GLIBC_TUNABLES")
    return found


def reuse_freed_host_memory() -> str | None:
    """Keep freed host memory for reuse (see the module); returns the one line to tell the user, or None when
    nothing changed (not glibc, already on, or the environment sets the allocator)."""
    global _active
    if _active:
        return None
    libc = _glibc()
    if libc is None:
        return None
    own = user_allocator_settings()
    if own:
        return (f"host memory: {', '.join(own)} set in the environment; theta_ai leaves glibc's allocator as "
                "configured there")
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)):
        return_freed_host_memory(force=True)
        return None
    _active = True
    return ("host memory: freed buffers are kept for reuse while training on the CPU (--reuse-host-memory: glibc "
            "mmap off, trim threshold 1 GiB, trimmed after each step; more peak memory); --no-reuse-host-memory "
            "turns it off")


def return_freed_host_memory(force: bool = False) -> bool:
    """Put glibc's default mmap and trim limits back and return the kept memory to the kernel; True when it did.
    Does nothing unless :func:`reuse_freed_host_memory` turned reuse on (or ``force``)."""
    global _active
    if not (_active or force):
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)
    _active = False
    return True


def trim_kept_host_memory() -> bool:
    """Hand the kept memory that is free right now back to the kernel (``malloc_trim(0)``: the freed top of the
    heap and the free pages inside it); True when reuse is on and it ran. Called after every optimizer step
    (:class:`theta_ai.training.callbacks.HostMemoryTrimCallback`): without it the heap of a bf16-autocast run
    grew by ~0.4 GB a step (6.6 GB after 16 Qwen3-vocabulary steps), because freed blocks of one size do not
    always fit the next request; with it the run keeps the speed (the pages of one step are reused by its
    micro-batches) and its peak stays within a few percent of glibc's default."""
    if not _active:
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def reusing_freed_host_memory() -> bool:
    """Whether :func:`reuse_freed_host_memory` is in effect in this process."""
    return _active
