"""Check the memory planner (``theta-train --plan``) against measured memory.

    python benchmarks/planner_check.py                       # CPU: activations vs saved tensors; GPU: real steps
    python benchmarks/planner_check.py --models gpt2,gpt2-medium --seq-lens 256,512 --batches 2,4,8
    python benchmarks/planner_check.py --readme-table        # also print the README table of plans

On a CUDA machine it trains a few real steps (random weights from the config: nothing is downloaded)
for each model, sequence length, batch and gradient-checkpointing setting, as Trainer does (fp16
autocast with fp32 master weights, GradScaler, fused AdamW, 2 accumulation steps, a padded batch), and
compares ``torch.cuda.max_memory_allocated()`` with the planner's estimate without its overhead term
(``MemoryEstimate.allocated``: the CUDA context and allocator slack are not in that counter).

Without a GPU it checks the activation half of the estimate: it builds small GPT-2 and Llama models on
the CPU, sums the bytes autograd saves for backward during one forward pass with loss
(:func:`theta_ai.planner.measure.saved_tensor_bytes`) and compares them with
``MemoryEstimate.saved_for_backward``. fp32 rows use dropout 0 (CPU dropout keeps a full-size mask and
CPU SDPA with attention dropout stores the score matrix; CUDA does neither). bf16 rows use CPU autocast,
which keeps gelu_new's ``pow`` in bf16 where CUDA autocast (what the planner models) runs it in fp32,
so GPT-2's estimate is expected to be about 20% above them.
"""

from __future__ import annotations

import argparse
import gc
import sys
import warnings


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def cpu_rows() -> list[str]:
    import peft
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    from theta_ai.planner import LoraSpec, estimate_memory
    from theta_ai.planner.measure import saved_tensor_bytes

    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    models = [
        ("gpt2 h128 L2", GPT2Config(n_embd=128, n_layer=2, n_head=4, vocab_size=2048, n_positions=512, **no_dropout),
         4, 128, ("c_attn",)),
        ("gpt2 h256 L4", GPT2Config(n_embd=256, n_layer=4, n_head=8, vocab_size=8000, n_positions=512, **no_dropout),
         2, 256, ("c_attn", "c_proj", "c_fc")),
        ("llama h128 L2 gqa", LlamaConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, vocab_size=2048), 4, 128,
         ("q_proj", "v_proj")),
        ("llama h256 L3", LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=3,
                                      num_attention_heads=8, vocab_size=4000), 2, 256, "all-linear"),
    ]
    rows = ["| model | batch x seq | precision | setting | estimated | measured | estimate / measured |",
            "|---|---|---|---|---:|---:|---:|"]
    for name, config, batch, seq, targets in models:
        settings = [("full", {}), ("checkpointing", {"gradient_checkpointing": True}),
                    (f"LoRA r=8 {targets if isinstance(targets, str) else ','.join(targets)}",
                     {"lora": LoraSpec(8, targets)})]
        for precision in ("fp32", "bf16"):
            for label, kwargs in settings if precision == "fp32" else settings[:1]:
                torch.manual_seed(0)
                model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
                if kwargs.get("gradient_checkpointing"):
                    model.activation_checkpointing_enable()
                if "lora" in kwargs:
                    spec = kwargs["lora"]
                    model = peft.get_peft_model(model, peft.LoraConfig(
                        r=spec.r, target_modules=spec.target_modules if isinstance(spec.target_modules, str)
                        else list(spec.target_modules)))
                measured = saved_tensor_bytes(model, batch, seq,
                                              autocast_dtype=torch.bfloat16 if precision == "bf16" else None)
                est = estimate_memory(config, batch_size=batch, seq_len=seq, precision=precision, padded=False, **kwargs)
                shown = precision if precision == "fp32" else "bf16 (CPU autocast)"
                rows.append(f"| {name} | {batch} x {seq} | {shown} | {label} | {est.saved_for_backward / 2**20:.2f} MiB "
                            f"| {measured.activations / 2**20:.2f} MiB | {est.saved_for_backward / measured.activations:.3f} |")
    return rows


def gpu_rows(models: list[str], seq_lens: list[int], batches: list[int], precision: str) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM

    from theta_ai.planner import estimate_memory
    from theta_ai.planner.measure import cuda_step_peak
    from theta_ai.planner.models import model_config

    free = torch.cuda.get_device_properties(0).total_memory
    rows = ["| model | batch x seq | checkpointing | estimated (allocated) | max_memory_allocated | error |",
            "|---|---|---|---:|---:|---:|"]
    for name in models:
        config = model_config(name)
        for seq in seq_lens:
            for batch in batches:
                for checkpointing in (False, True):
                    est = estimate_memory(config, batch_size=batch, seq_len=seq, precision=precision,
                                          gradient_checkpointing=checkpointing)
                    if est.allocated > 0.9 * free:
                        rows.append(f"| {name} | {batch} x {seq} | {'on' if checkpointing else 'off'} | "
                                    f"{est.allocated / 2**30:.2f} GiB | (skipped: over this card) | |")
                        continue
                    torch.manual_seed(0)
                    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
                    if checkpointing:
                        model.activation_checkpointing_enable()
                    peak = cuda_step_peak(model, batch, seq, precision=precision)
                    del model
                    gc.collect()
                    torch.cuda.empty_cache()
                    rows.append(f"| {name} | {batch} x {seq} | {'on' if checkpointing else 'off'} | "
                                f"{est.allocated / 2**30:.2f} GiB | {peak / 2**30:.2f} GiB | "
                                f"{(est.allocated - peak) / peak:+.1%} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gpt2,gpt2-medium", help="GPU check: comma-separated model names")
    parser.add_argument("--seq-lens", default="256,512", help="GPU check: sequence lengths")
    parser.add_argument("--batches", default="1,4,8", help="GPU check: per-device batch sizes")
    parser.add_argument("--precision", default="fp16", choices=("fp16", "bf16", "fp32"))
    parser.add_argument("--readme-table", action="store_true", help="also print the README table of plans")
    args = parser.parse_args(argv)
    _quiet()
    import torch

    print("## Activations: estimate vs bytes saved for backward (CPU, one forward pass with loss)\n")
    print("\n".join(cpu_rows()))
    print()
    if torch.cuda.is_available():
        print(f"## Peak memory of real training steps on {torch.cuda.get_device_name(0)} ({args.precision})\n")
        print("\n".join(gpu_rows(args.models.split(","), [int(s) for s in args.seq_lens.split(",")],
                                 [int(b) for b in args.batches.split(",")], args.precision)))
    else:
        print("No CUDA GPU here: the comparison of whole training steps with torch.cuda.max_memory_allocated() "
              "needs a GPU; rerun this script on one.")
    if args.readme_table:
        from theta_ai.planner import plan_table_markdown

        print("\n## Plans for a 12 GiB card, effective batch 16, fp16\n")
        print(plan_table_markdown(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
