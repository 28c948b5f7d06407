"""GPU memory planner: the peak memory of a training step, and the fastest settings that fit a card.

``theta-train --plan [--gpu-memory 12GB]`` prints both without allocating any GPU memory: parameter
counts come from the model built on PyTorch's ``meta`` device (shapes, no storage), everything else
from the model config. The library calls::

    from transformers import GPT2Config
    from theta_ai.planner import estimate_memory, plan, parse_memory
    estimate_memory(GPT2Config(), batch_size=4, seq_len=512, precision="fp16").total
    plan(GPT2Config(), effective_batch=16, seq_len=512, gpu_memory_bytes=parse_memory("12GiB")).lines()

The estimate
------------
P parameters, T of them trainable (all, or only the LoRA adapters), P_mm the weights of matmul layers
(linear layers and the LM head), L layers, hidden size h, intermediate size i, n heads, kv the
key/value width, vocabulary V, N = batch x sequence tokens per micro-batch; ``a`` = 2 bytes for fp16/bf16
mixed precision, 4 for fp32::

    weights          4 P               fp32 always: Trainer's fp16/bf16 is autocast with fp32 master weights
    autocast copies  a P_mm (a = 2)    fp16/bf16 only: autocast's half-precision weight copies, kept for backward
    gradients        4 T               fp32, like the weights they belong to
    optimizer        8 T               AdamW: two fp32 states (exp_avg, exp_avg_sq) per trainable parameter
    activations      N (L A_layer + A_model)       tensors autograd saves for backward, see below
    logits/loss      12 N V            three fp32 N x V tensors at the start of backward (see below)
    overhead         512 MiB + 10 %    CUDA context and cuBLAS workspace + caching-allocator slack
    total            the sum

The sum is the memory at the start of the backward pass, the peak of a step: every activation is still
alive, the cross-entropy is at its largest, and with gradient accumulation the gradients of earlier
micro-batches are held too (with accumulation 1 they only build up as activations are freed, so the
sum over-estimates by up to the gradient term). Trainer's default optimizer (fused AdamW) needs no
step-sized temporaries, so the optimizer step itself is lower.

**Activations.** Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models" (eq. 2), give ``s b h (34 + 5 a s / h)`` bytes per layer for fp16 activations: 11 s b h for
attention, 19 s b h for the MLP (i = 4h), 4 s b h for the two LayerNorms, and 5 a s^2 b for the
attention scores, softmax and dropout. SDPA (flash / memory-efficient kernels, transformers' default)
never stores the s x s scores: the ``5 a s / h`` term becomes a fp32 log-sum-exp per head (4 n bytes
per token). The rest is adapted to what transformers' code actually saves (the per-tensor lists,
checked with saved-tensor hooks, are in :mod:`theta_ai.planner.activations`), per token per layer:

* GPT-2: ``(8 + 6a) h + (12 + 2a) i + 4 n + 16`` bytes, plus 2 h for the two residual dropout masks and
  ``a s`` for SDPA's padding bias when batches are padded. The residual stream is fp32 (4 bytes, the
  8 h), and HF's ``gelu_new`` is written in Python, so it keeps four N x i tensors, three of them fp32
  (CUDA autocast runs ``pow`` in fp32): 16 i under mixed precision where Korthikanti counts 4 i. For
  gpt2 that is about 86 h bytes per token per layer, where eq. 2 (without scores) gives 34 h.
* Llama (also Mistral, Qwen2): ``30 h + 4 kv + 8 i + 4 n`` mixed, ``32 h + 8 kv + 16 i + 4 n`` fp32
  (each linear layer saves its own half-precision cast of the fp32 RMSNorm output; RMSNorm keeps two
  fp32 tensors); k and v are full width (kv = h) when a padding mask forces ``repeat_kv``.
* anything else: eq. 2 without the score terms, with an fp32 residual stream:
  ``8 h + a (4 h + 2 kv + 2 i) + 4 n`` bytes plus dropout masks.

Around the layers (A_model): the final norm (fp32) and the LM head input (a h). Gradient checkpointing
(transformers' non-reentrant checkpoint of each decoder layer) keeps only each layer's fp32 input,
4 h per token per layer, plus one layer's full activations while it is recomputed in backward.

**Logits and loss.** transformers computes the causal-LM loss in fp32 (``ForCausalLMLoss`` upcasts
the logits); at the start of backward the saved log-softmax output, the gradient from ``nll_loss``
and the gradient of the logits are three fp32 N x V tensors, 12 N V bytes. For GPT-2's 50,257-token
vocabulary that is 0.6 MB per token (2.3 GiB for 8 x 512 tokens), three quarters of what gpt2's twelve
layers keep. With the chunked loss (``--chunked-loss``, on by default for vocabularies of 100k tokens and more)
the fused head and loss (training/linear_cross_entropy.py) make one slice of positions' logits at a time in one
256 MiB fp32 buffer (plus the matmul's half-precision output under mixed precision), turn them into the gradient
in place and save none for backward.

**LoRA** (``LoraSpec``): the base weights are frozen, so only the adapters (``r (in + out)`` per
targeted linear layer, counted exactly on the meta model) have gradients and optimizer states.
Activations still flow through every layer; autograd only stops saving the inputs of frozen, untargeted
linear layers, RMSNorm's normalised tensor and the LM head input (weight gradients nobody needs), and
adds each adapter's small r-wide activation (plus its input again and a dropout mask when
``dropout > 0``).

**k-bit bases (QLoRA)** (``quantization`` 4 or 8, always with LoRA): bitsandbytes replaces every linear layer
but the LM head. Their weights take 4 bits + the NF4 block constants (double quantisation: an 8-bit absmax per
64 weights and an fp32 constant per 256 of those, 4.127 bits in all), or 8 bits + an fp32 scale per output row.
peft's ``prepare_model_for_kbit_training`` upcasts every other parameter (embeddings, norms, biases, an untied
LM head) to fp32. Autocast copies only the LM head; a quantised layer is dequantised to the compute dtype one
layer at a time (the largest such layer is counted once). The frozen layers save no input for a weight gradient,
as with LoRA on a full-precision base.

Assumptions: one GPU; the model is trained in fp32 weights (gpt2 checkpoints are fp32; load others with
``dtype=torch.float32``); transformers' SDPA attention; every row is padded to ``seq_len`` (the
``--max-seq-length`` worst case; length grouping makes most batches shorter); CUDA autocast rules.
The CPU check in ``benchmarks/planner_check.py`` compares the activation lists with the bytes
autograd actually saves; on a GPU it compares the total with ``torch.cuda.max_memory_allocated``.

Fastest settings
----------------
:func:`plan` keeps the effective batch (per-device batch x gradient accumulation) exactly as asked,
so the per-device batches tried are its divisors, and orders the candidates by a simple rule, fastest
first:

1. full fine-tuning before LoRA before QLoRA (a 4-bit base): LoRA trains something else, so it is used only
   when nothing else fits; QLoRA also dequantises every layer at every step and needs bitsandbytes on CUDA;
2. without gradient checkpointing before with it: recomputing the forward pass costs about a third
   more compute per step, more than fuller micro-batches win back;
3. the largest per-device batch (fewest accumulation steps; bigger matmuls keep the GPU busier).

The recommendation is the first candidate whose estimated total fits the target memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from theta_ai.config.options import parse_memory  # noqa: F401 (re-exported)
from theta_ai.errors import ConfigError
from theta_ai.planner.activations import (AUTO_MIN_VOCAB, CHUNK_BYTES, FP32, LOGITS_PEAK_BYTES, LOGITS_SAVED_BYTES, Saved, checkpointed_layer_saved,
                                  layer_saved, model_saved, shape_of)
from theta_ai.planner.models import lora_targets, model_config, model_stats

GiB = 2**30
CUDA_CONTEXT_BYTES = 512 * 2**20  # CUDA context, kernels and cuBLAS workspace: outside torch's allocator
ALLOCATOR_SLACK = 0.10  # caching-allocator fragmentation (variable sequence lengths make it worse)
DEFAULT_GPU_MEMORY = 12 * GiB  # the RTX 3060, theta_ai's reference card
PRECISIONS = ("fp16", "bf16", "fp32")
# bytes per weight of a bitsandbytes layer: NF4 + double-quantised absmax (8 bit / 64 + 32 bit / (64 x 256)); int8
KBIT_WEIGHT_BYTES = {4: 0.5 + 1 / 64 + 4 / (64 * 256), 8: 1.0}
ADAMW_STATE_BYTES = 2 * FP32

__all__ = ["LoraSpec", "MemoryEstimate", "Candidate", "Plan", "estimate_memory", "plan", "parse_memory",
           "parameter_bytes", "model_config", "format_bytes", "format_target", "DEFAULT_GPU_MEMORY"]


@dataclass(frozen=True)
class LoraSpec:
    """LoRA settings the planner prices. ``target_modules`` uses peft's matching (a module whose name
    equals or ends with ``.<target>``); ``"all-linear"`` means every linear layer except the LM head."""

    r: int = 8
    target_modules: tuple[str, ...] | str = "all-linear"
    dropout: float = 0.0

    def describe(self) -> str:
        targets = self.target_modules if isinstance(self.target_modules, str) else ",".join(self.target_modules)
        return f"r={self.r} on {targets}" + (f", dropout {self.dropout:g}" if self.dropout else "")


@dataclass
class MemoryEstimate:
    """Estimated peak GPU memory of one training step, in bytes, term by term."""

    weights: int
    weight_copies: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int
    total: int
    # what it was computed for, and the pieces the tables and checks need
    batch_size: int = 0
    seq_len: int = 0
    precision: str = "fp16"
    gradient_checkpointing: bool = False
    lora: LoraSpec | None = None
    quantization: int | None = None  # 4 or 8: the frozen base's linear layers through bitsandbytes
    parameters: int = 0
    trainable: int = 0
    activation_parts: dict[str, int] = field(default_factory=dict)
    logits_saved: int = 0  # the part of ``logits`` autograd saves in forward (the log-softmax output)
    chunked_loss: bool = False

    @property
    def allocated(self) -> int:
        """Everything but the overhead: what ``torch.cuda.max_memory_allocated`` should show."""
        return self.total - self.overhead

    @property
    def saved_for_backward(self) -> int:
        """Bytes of tensors autograd saves in forward (activations without the recompute, saved logits)."""
        return self.activations - self.activation_parts.get("recomputed layer", 0) + self.logits_saved

    def as_table(self) -> list[str]:
        mp = "fp32" if self.precision == "fp32" else f"{self.precision} mixed precision"
        rows = [
            ("weights", self.weights, f"{self.parameters / 1e6:,.1f}M parameters, linear layers in "
             f"{self.quantization}-bit, the rest fp32" if self.quantization else
             f"{self.weights / FP32 / 1e6:,.1f}M parameters x 4 B (fp32 master weights)"),
            ("autocast copies", self.weight_copies, "LM head copy + one dequantised layer" if self.quantization
             else "half-precision copies of matmul weights" if self.weight_copies else "none in fp32"),
            ("gradients", self.gradients, f"{self.trainable / 1e6:,.2f}M trainable x 4 B"),
            ("optimizer", self.optimizer, "AdamW: 2 fp32 states per trainable parameter"),
            ("activations", self.activations, f"batch {self.batch_size} x {self.seq_len} tokens, {mp}"
             + (", gradient checkpointing" if self.gradient_checkpointing else "")),
            ("logits/loss", self.logits, "one slice's logits, fused loss (chunked loss)" if self.chunked_loss
             else "3 fp32 copies of batch x seq x vocab in the cross-entropy"),
            ("overhead", self.overhead, f"CUDA context {format_bytes(CUDA_CONTEXT_BYTES)} + "
             f"{ALLOCATOR_SLACK:.0%} allocator slack"),
            ("total", self.total, "estimated peak"),
        ]
        return [f"  {name:<16}{format_bytes(value):>10}   {note}" for name, value, note in rows]


def format_bytes(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def format_target(n: float) -> str:
    return f"{format_bytes(n)} ({n / 1e9:.1f} GB)"


def _precision(precision: str) -> str:
    if precision == "auto":  # theta-train's auto is fp16 on CUDA, and a plan is for a CUDA card
        return "fp16"
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    return precision


def parameter_bytes(config, dtype: Any = "fp32") -> int:
    """Bytes of all parameters of ``config``'s causal LM in ``dtype`` (tied weights counted once).

    The count is exact: the model is built on the ``meta`` device, which allocates nothing.
    """
    import torch

    names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    dtype = names.get(dtype, dtype)
    return model_stats(config).parameters * torch.empty((), dtype=dtype).element_size()


def estimate_memory(config, *, batch_size: int, seq_len: int, precision: str = "fp16",
                    gradient_checkpointing: bool = False, lora: LoraSpec | None = None,
                    padded: bool = True, quantization: int | None = None,
                    chunked_loss: bool | None = None) -> MemoryEstimate:
    """Estimate the peak GPU memory of one training step of ``config``'s causal LM (see the module docstring).

    ``padded``: batches carry a padding mask (theta-train's collator pads), which costs SDPA a bias per layer.
    ``quantization``: 4 or 8 for a bitsandbytes base (``--load-in-4bit`` / ``--load-in-8bit``), LoRA only.
    ``chunked_loss``: the LM head and loss one slice of positions at a time (``--chunked-loss``); None = auto,
    as theta-train decides it (vocabularies of 100k tokens and more).
    """
    precision = _precision(precision)
    if quantization is not None and (quantization not in KBIT_WEIGHT_BYTES or lora is None):
        raise ConfigError(f"quantization {quantization!r}: a k-bit base is 4 or 8 bits and trains LoRA adapters")
    if batch_size < 1 or seq_len < 1:
        raise ConfigError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    stats = model_stats(config)
    shape = shape_of(config)
    a = FP32 if precision == "fp32" else 2
    tokens = batch_size * seq_len

    in_layer: dict[str, int] = {}  # LoRA-targeted linear layer -> in_features (inside a decoder layer)
    outside: dict[str, int] = {}  # ... and outside the decoder layers (an LM head, if targeted)
    if lora is not None:
        in_layer, outside = lora_targets(stats, lora.target_modules)
        trainable = sum(lora.r * (fin + fout) for _, fin, fout in stats.targeted(lora.target_modules))
    else:
        trainable = stats.parameters

    def kept(entry: Saved) -> bool:
        if not entry.owners or lora is None:
            return True
        return lora.dropout == 0 and any(owner in in_layer or owner in outside for owner in entry.owners)

    def adapters(targets: dict[str, int]) -> float:  # lora_A's r-wide output; with dropout, its input and a mask
        return sum(lora.r * a + ((a + 1) * fin if lora.dropout > 0 else 0) for fin in targets.values())

    layer = sum(e.bytes_per_token for e in layer_saved(shape, a=a, seq_len=seq_len, padded=padded) if kept(e))
    layer += adapters(in_layer)
    around = sum(e.bytes_per_token for e in model_saved(shape, a=a) if kept(e)) + adapters(outside)
    if gradient_checkpointing:
        parts = {"checkpointed layer inputs": shape.layers * sum(e.bytes_per_token
                                                                 for e in checkpointed_layer_saved(shape)),
                 "recomputed layer": layer}
    else:
        parts = {"layers": shape.layers * layer}
    parts["outside the layers"] = around
    parts = {k: int(v * tokens) for k, v in parts.items()}
    activations = sum(parts.values())

    weights = (stats.parameters + (trainable if lora is not None else 0)) * FP32
    weight_copies = stats.matmul_weights * a if a < FP32 else 0
    if quantization is not None:
        weights, weight_copies = _kbit_weights(stats, quantization, trainable, a)
    gradients = trainable * FP32
    optimizer = trainable * ADAMW_STATE_BYTES
    if chunked_loss is None:
        chunked_loss = shape.vocab >= AUTO_MIN_VOCAB
    # chunked: one slice buffer of max(64, CHUNK_BYTES / 4V) positions (fp32, plus the half-precision matmul output
    # under mixed precision), none saved by the forward pass; whole logits: the cross-entropy's three fp32 copies
    if chunked_loss:
        logit_rows = min(tokens, max(64, CHUNK_BYTES // (FP32 * shape.vocab)))
        logits = (FP32 + (a if a < FP32 else 0)) * logit_rows * shape.vocab
    else:
        logits = LOGITS_PEAK_BYTES * tokens * shape.vocab
    allocated = weights + weight_copies + gradients + optimizer + activations + logits
    overhead = CUDA_CONTEXT_BYTES + int(ALLOCATOR_SLACK * allocated)
    return MemoryEstimate(weights, weight_copies, gradients, optimizer, activations, logits, overhead,
                          allocated + overhead, batch_size, seq_len, precision, gradient_checkpointing, lora,
                          quantization, stats.parameters, trainable, parts,
                          0 if chunked_loss else LOGITS_SAVED_BYTES * tokens * shape.vocab, chunked_loss)


def _kbit_weights(stats, bits: int, trainable: int, a: int) -> tuple[int, int]:
    """(weights, autocast copies) of a bitsandbytes base: quantised linear layers, everything else fp32."""
    quantised = [(fin, fout) for name, fin, fout in stats.linears if name != stats.output_layer]
    q_params = sum(fin * fout for fin, fout in quantised)
    q_bytes = sum(fin * fout * KBIT_WEIGHT_BYTES[bits] + (fout * FP32 if bits == 8 else 0) for fin, fout in quantised)
    head = next((fin * fout for name, fin, fout in stats.linears if name == stats.output_layer), 0)
    weights = int(q_bytes) + (stats.parameters - q_params + trainable) * FP32
    largest = max((fin * fout for fin, fout in quantised), default=0)
    return weights, head * (a if a < FP32 else 0) + largest * 2


@dataclass(frozen=True)
class Candidate:
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    lora: LoraSpec | None
    estimate: MemoryEstimate
    fits: bool
    quantization: int | None = None

    def settings(self) -> str:
        kind = (f"QLoRA ({self.quantization}-bit base) {self.lora.describe()}" if self.quantization else
                f"LoRA {self.lora.describe()}" if self.lora else "full fine-tuning")
        return (f"batch {self.batch_size} x accumulation {self.grad_accum}, gradient checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'}, " + kind)

    def flags(self) -> str:
        flags = f"--batch-size {self.batch_size} --grad-accum {self.grad_accum} " + (
            "--gradient-checkpointing" if self.gradient_checkpointing else "--no-gradient-checkpointing")
        flags += f" --lora --lora-r {self.lora.r}" if self.lora else " --no-lora"
        return flags + (f" --load-in-{self.quantization}bit" if self.quantization else "")


@dataclass
class Plan:
    """The fastest settings that fit (``recommended``), with every candidate considered, fastest first."""

    effective_batch: int
    seq_len: int
    gpu_memory_bytes: int
    precision: str
    candidates: list[Candidate]
    recommended: Candidate
    fits: bool
    model: str = "model"

    @property
    def estimate(self) -> MemoryEstimate:
        return self.recommended.estimate

    def lines(self) -> list[str]:
        rec = self.recommended
        head = [f"memory plan: {self.model} ({rec.estimate.parameters / 1e6:,.1f}M parameters), "
                f"{self.seq_len} tokens, effective batch {self.effective_batch}, {self.precision}, "
                f"target {format_target(self.gpu_memory_bytes)}"]
        if self.fits:
            head.append(f"fastest settings that fit: {rec.settings()}; estimated peak "
                        f"{format_bytes(rec.estimate.total)}")
        else:
            head.append(f"nothing fits in {format_bytes(self.gpu_memory_bytes)}: the smallest candidate, "
                        f"{rec.settings()}, needs {format_bytes(rec.estimate.total)}; shorten --max-seq-length "
                        f"or use a smaller model")
        head.append(f"  flags: {rec.flags()}")
        head += rec.estimate.as_table()
        head.append("candidates, fastest first:")
        head += [f"  {'fits ' if c.fits else 'over '} {format_bytes(c.estimate.total):>10}   {c.settings()}"
                 for c in self.candidates]
        return head


def plan(config, *, effective_batch: int, seq_len: int, gpu_memory_bytes: int = DEFAULT_GPU_MEMORY,
         precision: str = "fp16", lora: LoraSpec | None = LoraSpec(), padded: bool = True,
         model: str | None = None, qlora: bool = True, quantization: int | None = None,
         chunked_loss: bool | None = None) -> Plan:
    """The fastest settings for ``config`` that fit ``gpu_memory_bytes`` (ranking: see the module docstring).

    ``lora`` is the LoRA candidate's spec; ``None`` never proposes LoRA. ``qlora`` adds 4-bit QLoRA candidates
    after everything in full precision (they need a CUDA GPU and the qlora extra, and dequantising costs time).
    ``quantization`` 4 or 8 plans only for that k-bit base (``--plan --load-in-4bit``).
    """
    precision = _precision(precision)
    if effective_batch < 1:
        raise ConfigError(f"effective batch must be positive, got {effective_batch}")
    batches = [b for b in range(effective_batch, 0, -1) if effective_batch % b == 0]
    if quantization is not None:
        kinds = [(lora or LoraSpec(), quantization)]
    else:
        kinds = [(None, None)] + ([(lora, None)] if lora is not None else []) + (
            [(lora, 4)] if lora is not None and qlora else [])
    candidates = []
    for lora_spec, bits in kinds:
        for checkpointing in (False, True):
            for batch in batches:
                est = estimate_memory(config, batch_size=batch, seq_len=seq_len, precision=precision,
                                      gradient_checkpointing=checkpointing, lora=lora_spec, padded=padded,
                                      quantization=bits, chunked_loss=chunked_loss)
                candidates.append(Candidate(batch, effective_batch // batch, checkpointing, lora_spec, est,
                                            est.total <= gpu_memory_bytes, bits))
    fitting = [c for c in candidates if c.fits]
    best = fitting[0] if fitting else min(candidates, key=lambda c: c.estimate.total)
    return Plan(effective_batch, seq_len, gpu_memory_bytes, precision, candidates, best, bool(fitting),
                model or getattr(config, "name_or_path", "") or getattr(config, "model_type", "model"))
