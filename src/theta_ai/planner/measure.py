"""Measure what the planner estimates: the bytes autograd saves for backward, and (on CUDA) a step's peak.

Used by the tests and ``benchmarks/planner_check.py`` to check :mod:`theta_ai.planner` against reality.
:func:`saved_tensor_bytes` runs anywhere (CPU included): it sums the distinct storages that
``torch.autograd.graph.saved_tensors_hooks`` sees during one forward pass with loss, leaving out the
parameters themselves. Differences from CUDA to keep in mind on CPU: dropout keeps a mask as large as
its input (CUDA keeps 1 byte per element) and SDPA with attention dropout falls back to the math kernel
that stores the score matrix, so compare with all dropout probabilities at 0; CPU autocast runs
``pow`` in bf16 where CUDA autocast runs it in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SavedBytes:
    activations: int  # distinct storages saved for backward, parameters and their autocast copies excluded
    weight_copies: int  # half-precision copies of parameters that autocast saved
    tensors: int  # how many distinct storages


def saved_tensor_bytes(model, batch_size: int, seq_len: int, *, autocast_dtype=None, seed: int = 0) -> SavedBytes:
    """One forward pass with ``labels`` (the loss included) on random token ids; count what autograd saves."""
    import torch

    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), generator=generator).to(device)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    shapes = {tuple(p.shape) for p in model.parameters()} | {tuple(p.shape[::-1]) for p in model.parameters()}
    seen: dict[int, tuple[int, bool]] = {}

    def is_weight_copy(tensor) -> bool:
        if tensor.dtype not in (torch.float16, torch.bfloat16):
            return False
        fn = tensor.grad_fn
        while fn is not None and type(fn).__name__ in ("TBackward0", "TransposeBackward0", "ViewBackward0"):
            fn = fn.next_functions[0][0]  # matmuls save a transposed view of the weight copy
        if fn is not None:  # autocast's cached cast of a trainable weight: ToCopy <- AccumulateGrad(parameter)
            return type(fn).__name__ == "ToCopyBackward0" and any(
                type(nxt).__name__ == "AccumulateGrad" for nxt, _ in fn.next_functions if nxt is not None)
        return tuple(tensor.shape) in shapes  # a frozen weight's cast (LoRA): no graph, a parameter's shape

    def pack(tensor):
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            seen[ptr] = (storage.nbytes(), is_weight_copy(tensor))
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            out = model(input_ids=ids, labels=ids)
    del out
    return SavedBytes(sum(n for n, copy in seen.values() if not copy), sum(n for n, copy in seen.values() if copy),
                      len(seen))


def cuda_step_peak(model, batch_size: int, seq_len: int, *, precision: str = "fp16", steps: int = 2,
                   grad_accum: int = 2) -> int:
    """``torch.cuda.max_memory_allocated`` over real optimizer steps (fused AdamW, autocast + GradScaler as
    Trainer does; ``grad_accum`` micro-batches per step, so gradients are held across micro-batches)."""
    import torch

    device = torch.device("cuda")
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    ids = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), device=device)
    mask = torch.ones_like(ids)
    mask[0, -1] = 0  # one padded position, as the collator produces: the planner assumes padded batches
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        for _ in range(grad_accum):
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
            scaler.scale(loss / grad_accum).backward()
            del loss
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()
