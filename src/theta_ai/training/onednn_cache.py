"""Bound oneDNN's kernel caches for a CPU run, before its first bf16 matrix product.

On a CPU, torch runs bf16 matrix products (bf16 autocast) through oneDNN, which keeps each kernel it builds in two
caches keyed by the operands' shapes: oneDNN's primitive cache (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) and ideep's
(``LRU_CACHE_CAPACITY``), 1,024 entries each by default. A padded batch has a new length almost every
micro-batch and each length needs its own kernels for every layer shape, forward and backward, so the caches fill
to 1,024 entries within about a hundred micro-batches and keep that memory, and the heap it fragments, for the
rest of the run. Measured (a 4-layer GPT-2 config, 100 bf16 forward/backward passes at random lengths 30-300,
2-core AMD EPYC, 2026-12-06): 761 MB held by the allocator with the default caches, 262 MB with 128 entries,
heap 1.6-1.9 GB against 0.8-0.9 GB, at the same speed (62 s against 62-64 s).

How many entries: those of one micro-batch at one length (:func:`kernel_cache_entries`), at least 16. A
micro-batch builds three kernels per distinct weight shape (forward, input gradient, weight gradient) and reuses
them across its layers (GPT-2 124M: 15 kernels, each run 12 times); the next micro-batch has another length and
builds its own, about 0.5 ms each (8 ms a GPT-2 124M micro-batch of ~1.8 s, ``ONEDNN_VERBOSE=profile_create``).
Kept longer, the entries cost peak memory through the heap they fragment, not only their own bytes: a GPT-2 124M
bf16 epoch peaked at 3,596-3,654 MB with 16-32 entries, 3,753 MB with 64 and 3,881-3,899 MB with 128, while
glibc's count of memory in use differed by 60 MB (2-core AMD EPYC, 2026-12-07, ``benchmarks/peak_phases.py``;
benchmarks/README.md). fp32 products do not use these caches.

Both capacities are read once per process, at the first product that needs them, so theta_ai sets them before its
precision probe; a notebook that ran bf16 products earlier keeps the sizes it started with. A user who sets
either variable keeps both as they are. A capacity of 0 crashes torch 2.13 (ideep), so theta_ai never writes one.
"""

from __future__ import annotations

import os

CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
MIN_KERNEL_CACHE_ENTRIES = 16
HEAD_KERNELS = 6  # the LM head's three products for a whole slice of the fused loss and for the last, shorter one

_set_here: dict[str, str] = {}  # what bound_kernel_caches wrote, so a second run in one process knows its own


def user_kernel_cache_settings() -> list[str]:
    """The oneDNN cache variables this process's environment sets (theta_ai then leaves both alone)."""
    return [name for name in CACHE_VARIABLES if name in os.environ]


def kernel_cache_entries(model) -> int:
    """Entries that hold one bf16 micro-batch's kernels at one length (see the module): three per distinct shape of
    the model's 2-D weights (LoRA's included), plus the LM head's, at least :data:`MIN_KERNEL_CACHE_ENTRIES`."""
    shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}
    return max(MIN_KERNEL_CACHE_ENTRIES, 3 * len(shapes) + HEAD_KERNELS)


def bound_kernel_caches(entries: int = MIN_KERNEL_CACHE_ENTRIES) -> bool:
    """Set both cache capacities to ``entries`` (see the module); True when this call set them, False when the
    environment sets either one (the user's choice). A second call in one process finds its own values and says
    True again without changing them (the caches were sized at the first product)."""
    if entries < 1:
        raise ValueError(f"a oneDNN cache of {entries} entries: at least 1 (0 crashes ideep)")
    current = {name: os.environ[name] for name in user_kernel_cache_settings()}
    if current:
        return current == _set_here
    _set_here.update({name: str(entries) for name in CACHE_VARIABLES})
    os.environ.update(_set_here)
    return True


def kernel_cache_note(set_here: bool) -> str:
    """The one line a bf16 CPU run prints about the caches: what theta_ai set, or that the environment's sizes hold."""
    sizes = ", ".join(f"{name}={os.environ[name]}" for name in user_kernel_cache_settings())
    if set_here:
        return (f"bf16 on the CPU: oneDNN's kernel caches hold one micro-batch's kernels ({sizes}; oneDNN's 1,024 "
                "kept ~0.5 GB more for the whole run); set either variable to choose another size")
    return f"bf16 on the CPU: oneDNN's kernel caches as the environment sets them ({sizes})"
