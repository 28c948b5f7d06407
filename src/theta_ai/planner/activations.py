"""What autograd keeps for the backward pass, per token, for one decoder layer and for the model around it.

This is the activation half of :mod:`theta_ai.planner` (read its docstring first). Each function
lists the tensors that transformers' implementation of a model family saves for backward, as
:class:`Saved` entries of *bytes per token* (multiply by batch x sequence length). The lists were
written from the modelling code and checked against the tensors that
``torch.autograd.graph.saved_tensors_hooks`` sees during one forward pass (see
:mod:`theta_ai.planner.measure`); they describe CUDA behaviour:

* ``a`` is the byte size of an autocast activation: 2 under fp16/bf16 mixed precision, 4 in fp32.
  The residual stream and norm statistics stay fp32 (4 bytes) either way, because Trainer's mixed
  precision keeps fp32 master weights, so embeddings and residual additions are fp32.
* Under CUDA autocast every matmul casts its fp32 input to half precision and saves that copy;
  ``pow``, ``rsqrt`` and ``layer_norm`` run in fp32.
* SDPA (flash or memory-efficient kernels) saves q, k, v, its output and a fp32 log-sum-exp per
  head, never the seq x seq score matrix; attention dropout happens inside the kernel. With a
  padding mask (``padded``) HF passes a boolean 4-D mask, which SDPA turns into an additive bias of
  the activation dtype in every layer (``a`` x seq bytes per token per layer).
* Dropout keeps a 1-byte boolean mask (CUDA's fused dropout) when its probability is above zero.
* An entry with ``owners`` is kept only for a weight gradient of those modules (the input of a
  linear layer, the normalised tensor an RMSNorm weight multiplies): when every owner is frozen
  (LoRA) autograd does not save it.
"""

from __future__ import annotations

from dataclasses import dataclass

FP32 = 4
GPT2_FAMILY = ("gpt2",)
LLAMA_FAMILY = ("llama", "mistral", "qwen2")
# Activation functions transformers implements as one native op (saves one tensor: its input).
NATIVE_ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "relu", "silu", "swish", "gelu_fast", "quick_gelu")


@dataclass(frozen=True)
class Saved:
    """One tensor kept for backward: ``bytes_per_token`` of it for every token of the micro-batch."""

    what: str
    bytes_per_token: float
    owners: tuple[str, ...] = ()


@dataclass(frozen=True)
class Shape:
    """The numbers of a model config that activation memory depends on."""

    family: str  # "gpt2", "llama" or "generic"
    hidden: int
    intermediate: int
    heads: int
    kv_dim: int  # key/value width: num_key_value_heads x head_dim (= hidden without grouped-query attention)
    layers: int
    vocab: int
    activation: str
    resid_dropout: float
    embd_dropout: float

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def shape_of(config) -> Shape:
    """Read a :class:`Shape` from a ``transformers.PretrainedConfig`` (GPT-2 and Llama key names both work)."""
    model_type = getattr(config, "model_type", "")
    family = "gpt2" if model_type in GPT2_FAMILY else "llama" if model_type in LLAMA_FAMILY else "generic"
    hidden = config.hidden_size
    heads = config.num_attention_heads
    intermediate = (getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
                    or getattr(config, "ffn_dim", None) or 4 * hidden)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    activation = (getattr(config, "activation_function", None) or getattr(config, "hidden_act", None) or "gelu")
    resid = float(getattr(config, "resid_pdrop", None) or getattr(config, "hidden_dropout", None)
                  or getattr(config, "hidden_dropout_prob", None) or 0.0)
    embd = float(getattr(config, "embd_pdrop", None) or 0.0)
    return Shape(family, hidden, intermediate, heads, kv_heads * head_dim, config.num_hidden_layers,
                 config.vocab_size, str(activation), resid, embd)


def layer_saved(shape: Shape, *, a: int, seq_len: int, padded: bool) -> list[Saved]:
    """The tensors one decoder layer keeps for backward (bytes per token)."""
    build = {"gpt2": _gpt2_layer, "llama": _llama_layer}.get(shape.family, _generic_layer)
    entries = build(shape, a, a < FP32, padded)
    entries.append(Saved("SDPA log-sum-exp (fp32, per head)", FP32 * shape.heads))
    if padded:
        entries.append(Saved("SDPA additive padding bias (seq per token)", a * seq_len))
    return entries


def _gelu_saved(shape: Shape, a: int) -> list[Saved]:
    i = shape.intermediate
    if shape.activation in NATIVE_ACTIVATIONS:
        return [Saved(f"{shape.activation} input", a * i)]
    # gelu_new: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * pow(x, 3)))), one autograd op at a time.
    # Under CUDA autocast pow runs in fp32, so everything after it is fp32; only 0.5 * x keeps x's dtype.
    return [Saved("gelu_new: pow input (fp32)", FP32 * i), Saved("gelu_new: tanh output (fp32)", FP32 * i),
            Saved("gelu_new: 0.5 * x", a * i), Saved("gelu_new: 1 + tanh (fp32)", FP32 * i)]


def _gpt2_layer(shape: Shape, a: int, mixed: bool, padded: bool) -> list[Saved]:
    h, i = shape.hidden, shape.intermediate
    mask = 1 if shape.resid_dropout > 0 else 0
    return [
        Saved("ln_1 input (fp32 residual)", FP32 * h), Saved("ln_1 mean, rstd", 2 * FP32),
        Saved("c_attn input", a * h, ("attn.c_attn",)),
        Saved("q, k, v (views of c_attn output)", 3 * a * h),
        Saved("SDPA output = attn.c_proj input", a * h),
        Saved("attention residual dropout mask", mask * h),
        Saved("ln_2 input (fp32 residual)", FP32 * h), Saved("ln_2 mean, rstd", 2 * FP32),
        Saved("c_fc input", a * h, ("mlp.c_fc",)),
        *_gelu_saved(shape, a),
        Saved("mlp.c_proj input", a * i, ("mlp.c_proj",)),
        Saved("mlp residual dropout mask", mask * h),
    ]


def _rms_norm(name: str, h: int) -> list[Saved]:
    # x.pow(2) and x * rsqrt(...) save the fp32 input; weight * normed saves normed (for the weight's gradient).
    return [Saved(f"{name} input (fp32 residual)", FP32 * h), Saved(f"{name} rsqrt", FP32),
            Saved(f"{name} normalised (fp32)", FP32 * h, (name,))]


def _llama_layer(shape: Shape, a: int, mixed: bool, padded: bool) -> list[Saved]:
    h, i = shape.hidden, shape.intermediate
    # Grouped-query attention reaches SDPA as enable_gqa=True without a mask; with one, repeat_kv copies k and v.
    kv = h if padded else shape.kv_dim
    qkv = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    gate_up = ("mlp.gate_proj", "mlp.up_proj")
    if mixed:  # every linear layer casts the fp32 norm output itself and saves its own half-precision copy
        attn_inputs = [Saved(f"{name} input (autocast copy)", a * h, (name,)) for name in qkv]
        mlp_inputs = [Saved(f"{name} input (autocast copy)", a * h, (name,)) for name in gate_up]
    else:  # the fp32 norm output is shared by the linear layers that read it
        attn_inputs = [Saved("q/k/v_proj input (norm output)", FP32 * h, qkv)]
        mlp_inputs = [Saved("gate/up_proj input (norm output)", FP32 * h, gate_up)]
    return [
        *_rms_norm("input_layernorm", h), *attn_inputs,
        Saved("SDPA q (after RoPE)", a * h), Saved("SDPA k (after RoPE), v", 2 * a * kv),
        Saved("SDPA output = o_proj input", a * h),
        *_rms_norm("post_attention_layernorm", h), *mlp_inputs,
        Saved("gate_proj output (activation input)", a * i), Saved("activation output", a * i),
        Saved("up_proj output", a * i), Saved("down_proj input", a * i, ("mlp.down_proj",)),
    ]


def _generic_layer(shape: Shape, a: int, mixed: bool, padded: bool) -> list[Saved]:
    """Korthikanti et al. (2022), eq. 2 without the score-matrix terms, with an fp32 residual stream."""
    h, i = shape.hidden, shape.intermediate
    mask = 1 if shape.resid_dropout > 0 else 0
    return [
        Saved("two norm inputs (fp32 residual)", 2 * FP32 * h), Saved("attention input", a * h),
        Saved("q, k, v", a * (h + 2 * shape.kv_dim)), Saved("attention output = projection input", a * h),
        Saved("mlp input", a * h), Saved("activation input", a * i), Saved("activation output", a * i),
        Saved("two dropout masks", 2 * mask * h),
    ]


def checkpointed_layer_saved(shape: Shape) -> list[Saved]:
    """With gradient checkpointing a layer keeps only its input (the fp32 residual stream)."""
    return [Saved("checkpointed layer input (fp32)", FP32 * shape.hidden)]


def model_saved(shape: Shape, *, a: int) -> list[Saved]:
    """Tensors outside the decoder layers: embeddings, the final norm and the LM head input (bytes per token)."""
    h = shape.hidden
    entries = [Saved("input ids for the embedding gradient", 8, ("embeddings",)), Saved("labels", 8)]
    if shape.family == "gpt2":
        entries += [Saved("embedding dropout mask", (1 if shape.embd_dropout > 0 else 0) * h),
                    Saved("ln_f input (fp32)", FP32 * h), Saved("ln_f mean, rstd", 2 * FP32)]
    elif shape.family == "llama":
        entries += [Saved("RoPE cos, sin (fp32)", 2 * FP32 * shape.head_dim), *_rms_norm("model.norm", h)]
    else:
        entries += [Saved("final norm input (fp32)", FP32 * h)]
    entries.append(Saved("lm_head input", a * h, ("lm_head",)))
    return entries


# The cross-entropy over the vocabulary, bytes per token per vocabulary entry. Loss is computed in fp32
# (ForCausalLMLoss upcasts the logits). At the start of the backward pass three fp32 [tokens x vocab]
# tensors are alive: the log-softmax output saved by forward, the gradient nll_loss hands back, and the
# gradient of the logits that log_softmax's backward produces. (The forward end is lower: half-precision
# logits + fp32 copy + log-softmax output = 10 bytes under mixed precision, 8 in fp32.)
LOGITS_PEAK_BYTES = 3 * FP32
LOGITS_SAVED_BYTES = FP32

# Chunked cross-entropy (theta_ai.training.loss, --chunked-loss): the fused LM head and loss
# (training/linear_cross_entropy.py) make the logits of a slice of positions at a time in one reused fp32 buffer
# (CHUNK_BYTES; under mixed precision the matmul's half-precision output too), turn them into the loss and its
# gradient in place and keep no logits for the backward pass. auto uses it for vocabularies of AUTO_MIN_VOCAB
# tokens and more.
AUTO_MIN_VOCAB = 100_000  # Llama 3 (128k), Qwen (151k), Gemma (262k); GPT-2's 50k keeps the plain path
CHUNK_BYTES = 1 << 28  # fp32 logits of one slice: 256 MiB (443 positions of a 151k vocabulary)
