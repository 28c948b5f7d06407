"""BOS, EOS and end-of-turn rules, read from the tokenizer and its chat template -- never from family names.

Real tokenizers disagree on all three (``../shared/tokenizers/README.md`` in the source tree has four cases):

* **BOS.** GPT-2 and Qwen have none; Llama-2-style sentencepiece tokenizers and Gemma add one themselves
  (``add_special_tokens=True``); Llama-3's and Gemma's chat templates write it into the text. theta_ai
  puts it exactly once: :func:`tokenizer_prefix_ids` is what the tokenizer adds in front of a text (or, when
  it adds nothing, the BOS the template writes first, :func:`template_writes_bos`), and a chat-template
  render that already starts with it gets nothing more.
* **End of an assistant turn.** ChatML (Qwen, SmolLM) closes it with ``<|im_end|>`` (its EOS), Gemma with
  ``<end_of_turn>`` (its EOS), Llama-3 with ``<|eot_id|>`` while its EOS is ``<|end_of_text|>``.
  :func:`template_turn_end` finds the special token a template writes right after an answer by rendering a
  probe conversation.
* **Stopping.** A model must stop on every token it was trained to end with: the turn end, the EOS, and every
  id in its own ``generation_config.eos_token_id`` (Llama-3-Instruct lists three). :func:`stop_token_ids` is
  their union; :func:`keep_generation_eos` keeps the model's list and adds what is missing, so checkpoints stop
  on the trained end token with plain ``model.generate`` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

#: The assistant text of the probe conversation (distinctive, so a template's own words never match it).
PROBE_ANSWER = "THETA_PROBE_ANSWER"
PROBE_CONVERSATION = ({"role": "user", "content": "THETA_PROBE_QUESTION"},
                      {"role": "assistant", "content": PROBE_ANSWER})


def tokenizer_prefix_ids(tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    """The ids the tokenizer itself puts before a text (its BOS, when it adds one; ``[]`` for GPT-2 or Qwen).

    >>> tokenizer_prefix_ids(llama2_tokenizer)  # doctest: +SKIP
    [1]
    """
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    marked = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(marked) - len(plain) + 1):
        if marked[start: start + len(plain)] == plain:
            return list(marked[:start])
    return []


def special_token_strings(tokenizer: "PreTrainedTokenizerBase") -> list[str]:
    """Every special token's text (named ones and added tokens marked special), longest first."""
    found = set(tokenizer.all_special_tokens)
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(added, "special", False):
            found.add(str(added))
    return sorted((t for t in found if t), key=lambda t: (-len(t), t))


def first_special(text: str, specials: Sequence[str], start: int = 0) -> tuple[int, str] | None:
    """``(position, token)`` of the earliest special token in ``text[start:]`` (the longest one at a tie)."""
    best: tuple[int, str] | None = None
    for token in specials:  # longest first, so at equal positions the longer token wins
        position = text.find(token, start)
        if position != -1 and (best is None or position < best[0]):
            best = (position, token)
    return best


def _probe_render(tokenizer: "PreTrainedTokenizerBase") -> str | None:
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        return tokenizer.apply_chat_template(list(PROBE_CONVERSATION), tokenize=False)
    except Exception:  # a template that refuses the probe says why when the data is formatted
        return None


def template_writes_bos(tokenizer: "PreTrainedTokenizerBase") -> bool:
    """True when the chat template starts a conversation with the tokenizer's BOS, and uses it nowhere else.

    Llama-3 and Gemma templates write ``<|begin_of_text|>`` / ``<bos>`` once, first. SmolLM2 names
    ``<|im_start|>`` its BOS but opens every turn with it: a turn marker, not a beginning of text.
    """
    text = _probe_render(tokenizer)
    bos = tokenizer.bos_token
    return bool(text and bos and text.startswith(bos) and text.count(bos) == 1)


def template_turn_end(tokenizer: "PreTrainedTokenizerBase") -> str | None:
    """The special token the chat template writes right after an assistant answer (None: no template, or none).

    Found by rendering a probe conversation: ``<|im_end|>`` for ChatML, ``<|eot_id|>`` for Llama-3,
    ``<end_of_turn>`` for Gemma.
    """
    text = _probe_render(tokenizer)
    end = -1 if text is None else text.find(PROBE_ANSWER)
    if end == -1:
        return None
    found = first_special(text, special_token_strings(tokenizer), end + len(PROBE_ANSWER))
    return found[1] if found else None


@dataclass(frozen=True)
class TokenRules:
    """What a tokenizer and its template say about the start and the end of a training example.

    ``bos_ids``: what the tokenizer puts in front of a text, or else the BOS its chat template writes first
    (Llama-3's tokenizer adds none, its template does: a base model still saw it first); ``turn_end``: the special token closing an
    assistant turn in the chat template (None without one); ``specials``: every special token's text.
    """

    bos_ids: tuple[int, ...]
    eos_id: int | None
    turn_end: str | None
    turn_end_id: int | None
    specials: tuple[str, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer: "PreTrainedTokenizerBase") -> "TokenRules":
        turn_end = template_turn_end(tokenizer)
        turn_end_id = tokenizer.convert_tokens_to_ids(turn_end) if turn_end else None
        bos_ids = tokenizer_prefix_ids(tokenizer)
        if not bos_ids and template_writes_bos(tokenizer):
            bos_ids = [tokenizer.bos_token_id]
        return cls(bos_ids=tuple(bos_ids), eos_id=tokenizer.eos_token_id,
                   turn_end=turn_end, turn_end_id=turn_end_id, specials=tuple(special_token_strings(tokenizer)))

    def end_ids(self) -> list[int]:
        """The ids a trained answer can end with: the template's turn end, then the EOS."""
        return list(dict.fromkeys(i for i in (self.turn_end_id, self.eos_id) if i is not None))


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def stop_token_ids(model, tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    """Every id generation stops on: the template's turn end, the tokenizer's EOS, the model's EOS list."""
    configured = _as_list(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    return list(dict.fromkeys([*TokenRules.from_tokenizer(tokenizer).end_ids(), *configured]))


def keep_generation_eos(model, tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    """Keep ``generation_config.eos_token_id`` as the model has it and add the trained end ids it lacks.

    Returns the ids added (empty when the model already stops on them).
    """
    config = getattr(model, "generation_config", None)
    if config is None:
        return []
    existing = _as_list(config.eos_token_id)
    added = [i for i in TokenRules.from_tokenizer(tokenizer).end_ids() if i not in existing]
    if added:
        merged = existing + added
        config.eos_token_id = merged[0] if len(merged) == 1 else merged
    return added
