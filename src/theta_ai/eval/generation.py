"""Answer generation for evaluation: batched greedy decoding, answer clean-up, teacher-forced answer loss.

The prompt is exactly the training prompt (:meth:`ExampleFormatter.prompt_ids`). Prompts are sorted
by length, cut into batches, **left**-padded (so every row's next token sits in the last column) and
decoded greedily with the KV cache by ``model.generate``; results come back in the original order.
Greedy decoding is deterministic, and a batch gives the same answers as one prompt at a time
(the padded positions are masked out and position ids follow the attention mask).
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from theta_ai.data.tokenize import IGNORE_INDEX
from theta_ai.model.tokens import stop_token_ids  # the stop rules live with the token rules

if TYPE_CHECKING:  # pragma: no cover
    from theta_ai.data import Example, ExampleFormatter

#: theta-eval's ``--max-new-tokens`` and the generation-eval callback's: the same answers in both.
DEFAULT_MAX_NEW_TOKENS = 128

#: A following turn the model may write when it runs on past its answer (the ``qa`` template's user turn).
#: Cut after generation, not with ``generate(stop_strings=["Question:"], tokenizer=...)``: transformers'
#: StopStringCriteria matches the string anywhere, also inside a word (``SubQuestion:`` would end the answer there),
#: keeps the stop string in the output (the cut would still be needed), and pads a row it stopped with
#: ``pad_token_id`` -- for GPT-2-style tokenizers the EOS id, so the row would read as ``hit_eos`` with the wrong
#: ``new_tokens``. A batch runs until its last row stops either way (tests/test_evaluation.py shows each).
_NEXT_TURN = re.compile(r"(?:^|(?<=[\s.!?,;:]))Question:")


@dataclass
class Generation:
    """One generated answer and how generation ended.

    ``hit_eos``: the model wrote a stop token. ``ran_on``: it went on into a ``Question:`` turn and the
    answer was cut there. ``truncated``: it reached ``max_new_tokens`` with neither (the answer may be
    incomplete). ``prompt_truncated``: the prompt was cut from the left to fit the model's context.
    """

    text: str
    raw_text: str
    token_ids: list[int]
    prompt_tokens: int
    new_tokens: int
    hit_eos: bool
    ran_on: bool
    truncated: bool
    prompt_truncated: bool = False


def clean_answer(text: str) -> tuple[str, bool]:
    """Strip white space and cut at a following ``Question:`` turn; returns ``(answer, ran_on)``.

    >>> clean_answer(" Paris. Question: What is 2 plus 2?")
    ('Paris.', True)
    """
    match = _NEXT_TURN.search(text)
    if match:
        return text[: match.start()].strip(), True
    return text.strip(), False


def context_length(model) -> int | None:
    """The longest sequence the model's position embeddings allow (None when the config does not say)."""
    config = model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_prompts(prompts: Sequence[list[int]], limit: int | None) -> tuple[list[list[int]], list[bool]]:
    """Cut prompts longer than ``limit`` tokens from the left (keeping the question's end and ``Answer:``)."""
    if limit is None:
        return [list(p) for p in prompts], [False] * len(prompts)
    return [list(p[-limit:]) for p in prompts], [len(p) > limit for p in prompts]


def select_subset(n: int, k: int | None, seed: int) -> list[int]:
    """``k`` of ``range(n)`` chosen with ``random.Random(seed)``, in ascending order (all when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), k))


class _QuietPaddingWarning(logging.Filter):
    """Drop transformers' "passing an attention_mask" advice: generate() omits an all-ones mask on its own
    decoding steps and GPT-2 then sees the EOS (= pad) id in finished rows; every call here does pass a mask."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "attention_mask" not in record.getMessage()


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i: i + size] for i in range(0, len(order), size)]


def generate_answers(model, tokenizer, prompts: Sequence[list[int]], *, batch_size: int = 16,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, progress: bool = False,
                     desc: str = "generating") -> list[Generation]:
    """Greedy answers for token-id prompts, batched with left padding, returned in the prompts' order.

    ``prompts`` must already fit the model's context together with ``max_new_tokens`` (see :func:`fit_prompts`).
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be at least 1")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(model, tokenizer)
    stop_set = set(stops)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    quiet = _QuietPaddingWarning()
    logging.getLogger("transformers.modeling_utils").addFilter(quiet)
    # Longest first: the largest batch runs first, so an out-of-memory error shows at once.
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    results: list[Generation | None] = [None] * len(prompts)
    try:
        with torch.inference_mode():
            for batch in tqdm(_batches(order, batch_size), desc=desc, unit="batch", disable=not progress):
                width = max(len(prompts[i]) for i in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    n = len(prompts[i])
                    input_ids[row, width - n:] = torch.as_tensor(prompts[i], dtype=torch.long)
                    attention_mask[row, width - n:] = 1
                output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                        pad_token_id=pad_id, eos_token_id=stops, use_cache=True)
                for row, i in enumerate(batch):
                    new = output[row, width:].tolist()
                    end = next((k for k, t in enumerate(new) if t in stop_set), None)
                    answer_ids = new if end is None else new[:end]
                    raw = tokenizer.decode(answer_ids, skip_special_tokens=True)
                    text, ran_on = clean_answer(raw)
                    results[i] = Generation(
                        text=text, raw_text=raw, token_ids=answer_ids, prompt_tokens=len(prompts[i]),
                        new_tokens=len(new) if end is None else end + 1, hit_eos=end is not None, ran_on=ran_on,
                        truncated=end is None and not ran_on and len(new) >= max_new_tokens)
    finally:
        model.train(was_training)
        logging.getLogger("transformers.modeling_utils").removeFilter(quiet)
    return results  # type: ignore[return-value]


def answer_losses(model, formatter: "ExampleFormatter", examples: Sequence["Example"], *,
                  batch_size: int = 16, progress: bool = False) -> list[tuple[float, int]]:
    """Teacher-forced ``(summed NLL, token count)`` over each example's answer tokens.

    The tokens and labels are the training ones (:meth:`ExampleFormatter.encode`, cut at
    ``max_seq_length``; the EOS ending each answer is an answer token). An example whose answer was
    cut away entirely gets ``(0.0, 0)``.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from theta_ai.data import PaddingCollator

    rows = [formatter.encode(example) for example in examples]
    collate = PaddingCollator(pad_token_id=formatter.tokenizer.pad_token_id
                              if formatter.tokenizer.pad_token_id is not None else formatter.tokenizer.eos_token_id)
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["length"], i))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in tqdm(_batches(order, batch_size), desc="answer loss", unit="batch", disable=not progress):
                features = collate([{"input_ids": rows[i]["input_ids"], "labels": rows[i]["labels"]} for i in batch])
                logits = model(input_ids=features["input_ids"].to(device),
                               attention_mask=features["attention_mask"].to(device), use_cache=False).logits
                labels = features["labels"][:, 1:].to(device)
                nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                      ignore_index=IGNORE_INDEX, reduction="none").view(labels.shape)
                mask = labels != IGNORE_INDEX
                sums, counts = (nll * mask).sum(dim=1).tolist(), mask.sum(dim=1).tolist()
                for row, i in enumerate(batch):
                    out[i] = (float(sums[row]), int(counts[row]))
    finally:
        model.train(was_training)
    return out
