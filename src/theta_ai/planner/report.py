"""The planner's reports: ``theta-train --plan`` (:func:`plan_report`) and README's fit table
(:func:`plan_table_markdown`), both from :mod:`theta_ai.planner.estimate`."""

from __future__ import annotations

from theta_ai.planner.estimate import (DEFAULT_GPU_MEMORY, LoraSpec, _precision, estimate_memory, format_bytes,
                                       format_target, parse_memory, plan)
from theta_ai.planner.models import model_config

# GPT-2 sizes, and the chat models people fit into 12 GB (QLoRA where nothing else fits); planner/models.py
# knows their configs without a download
README_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "HuggingFaceTB/SmolLM2-135M-Instruct",
                 "Qwen/Qwen2.5-1.5B-Instruct", "meta-llama/Llama-3.2-3B-Instruct")


def plan_table_markdown(models=README_MODELS, seq_lens=(256, 512), *, gpu_memory_bytes: int = DEFAULT_GPU_MEMORY,
                        effective_batch: int = 16, precision: str = "fp16") -> str:
    """The README table: what :func:`plan` picks for each model and sequence length on the target card."""
    head = ("| model | parameters | tokens | batch x accumulation | gradient checkpointing | LoRA | "
            "estimated peak |\n|---|---:|---:|---|---|---|---:|\n")
    rows = []
    for name in models:
        config = model_config(name)
        for seq_len in seq_lens:
            p = plan(config, effective_batch=effective_batch, seq_len=seq_len, gpu_memory_bytes=gpu_memory_bytes,
                     precision=precision)
            c = p.recommended
            rows.append(f"| `{name}` | {c.estimate.parameters / 1e6:,.0f}M | {seq_len} | "
                        f"{c.batch_size} x {c.grad_accum} | {'on' if c.gradient_checkpointing else 'off'} | "
                        f"{(f'QLoRA {c.quantization}-bit base, ' if c.quantization else '') + c.lora.describe() if c.lora else 'off'} | "
                        f"{format_bytes(c.estimate.total)}"
                        f"{'' if p.fits else ' (does not fit)'} |")
    return head + "\n".join(rows) + "\n"


def plan_report(cfg, gpu_memory: str | int | None = None) -> list[str]:
    """``theta-train --plan``: the estimate for the resolved configuration, then the plan. Allocates nothing."""
    gpu_bytes = DEFAULT_GPU_MEMORY if gpu_memory is None else parse_memory(gpu_memory)
    source = cfg.load_checkpoint or cfg.model_name
    config = model_config(source, trust_remote_code=cfg.trust_remote_code)
    precision = _precision(cfg.precision)
    from theta_ai.model.quantize import kbit_bits

    bits = kbit_bits(cfg)
    chunked = {"on": True, "off": False}.get(getattr(cfg, "chunked_loss", "auto"))  # auto: None, by vocabulary
    lora = None
    if getattr(cfg, "lora", False) or bits:
        targets = tuple(t.strip() for t in cfg.lora_target_modules.split(",")) if cfg.lora_target_modules else None
        lora = LoraSpec(r=cfg.lora_r, target_modules=targets or "all-linear")
    current = estimate_memory(config, batch_size=cfg.batch_size, seq_len=cfg.max_seq_length, precision=precision,
                              gradient_checkpointing=cfg.gradient_checkpointing, lora=lora, quantization=bits,
                              chunked_loss=chunked)
    verdict = "fits" if current.total <= gpu_bytes else "does NOT fit"
    kind = f"QLoRA {bits}-bit r={cfg.lora_r}" if bits else f"LoRA {'r=%d' % cfg.lora_r if lora else 'off'}"
    lines = [f"your settings (batch {cfg.batch_size} x accumulation {cfg.grad_accum}, gradient checkpointing "
             f"{'on' if cfg.gradient_checkpointing else 'off'}, {kind}): estimated peak {format_bytes(current.total)}, "
             f"{verdict} in {format_target(gpu_bytes)}", *current.as_table()]
    result = plan(config, effective_batch=cfg.batch_size * cfg.grad_accum, seq_len=cfg.max_seq_length,
                  gpu_memory_bytes=gpu_bytes, precision=precision, model=source, quantization=bits,
                  lora=lora or LoraSpec(), chunked_loss=chunked)
    return lines + result.lines()
