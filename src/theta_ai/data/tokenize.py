"""Examples -> ``input_ids`` + ``labels``, with the loss on answers only.

Two templates:

* ``qa`` (models without a chat template): ``Question: {question}\\nAnswer: {answer}<eos>``;
  a system message becomes a first line, and every turn of a conversation repeats the pattern.
* ``chat``: the tokenizer's own chat template. The conversation is rendered once; each assistant text is
  located in it after the generation prompt of the conversation up to that turn, so the split is exact for
  any template that renders conversations as growing prefixes.

The rules come from the tokenizer, not from family names (:mod:`theta_ai.model.tokens`): BOS exactly once
where the tokenizer or its template puts one; an answer is trained up to and including the special token that
closes its turn (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, or the EOS the ``qa`` template writes), and
nothing the template adds after it (a newline, early Llama-3's trailing assistant header). Text a template
puts between the generation prompt and the answer (Qwen3's empty ``<think>`` block) is prompt, so the
generation prompt is Qwen3's own non-thinking one.

The text is tokenized segment by segment (prompt, answer, prompt, answer, ...), so the mask is
set **by position**: prompt tokens get label ``-100``, answer tokens and the token that ends each
answer keep their ids. Nothing compares token ids with the pad id (GPT-2's pad *is* its EOS).
Generation builds its prompt from the very same segments (:meth:`ExampleFormatter.prompt_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from theta_ai.data.formats import Example
from theta_ai.errors import TemplateError  # noqa: F401 (defined in errors.py)
from theta_ai.model.tokens import PROBE_ANSWER, TokenRules, first_special, template_writes_bos

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
TEMPLATES = ("auto", "qa", "chat")


@dataclass
class FormatStats:
    """Token statistics of a formatted dataset, and what truncation did to it."""

    examples: int = 0
    truncated: int = 0
    dropped_no_answer: int = 0
    lengths: list[int] = field(default_factory=list)
    answer_tokens: int = 0
    kept: list[int] = field(default_factory=list)  # indices of the examples that made it into the dataset

    def warnings(self, max_seq_length: int) -> list[str]:
        out = []
        if self.truncated:
            out.append(f"{self.truncated} example(s) were longer than --max-seq-length {max_seq_length} "
                       "tokens and were cut at the end (raise --max-seq-length to keep them whole)")
        if self.dropped_no_answer:
            out.append(f"{self.dropped_no_answer} example(s) were left out because --max-seq-length "
                       f"{max_seq_length} cut away their whole answer (raise --max-seq-length or shorten the questions)")
        return out

    def summary(self) -> str:
        if not self.lengths:
            return "no examples"
        ordered = sorted(self.lengths)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        return (f"{self.examples} examples, {sum(ordered)} tokens (mean {sum(ordered) / len(ordered):.1f}, "
                f"p90 {p90}, max {ordered[-1]}), {self.answer_tokens} answer tokens")


def resolve_template(template: str, tokenizer: "PreTrainedTokenizerBase") -> str:
    """``auto`` -> ``chat`` when the tokenizer has a chat template, else ``qa``."""
    if template not in TEMPLATES:
        raise TemplateError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        return "chat" if has_chat else "qa"
    if template == "chat" and not has_chat:
        raise TemplateError("--template chat was asked for, but this tokenizer has no chat template; "
                            "use --template qa (or auto)")
    return template


class ExampleFormatter:
    """Formats :class:`Example` objects into token ids and position-masked labels.

    The rules come from the tokenizer (:class:`theta_ai.model.tokens.TokenRules`): BOS exactly once where
    the tokenizer or its template puts one, each answer trained up to and including the token that closes
    its turn, nothing the template writes after that.

    >>> fmt = ExampleFormatter(tokenizer, template="qa", max_seq_length=512)  # doctest: +SKIP
    >>> row = fmt.encode(Example.from_qa("What is TCP?", "A transport protocol."))  # doctest: +SKIP
    >>> row["labels"][:3]  # the prompt is masked  # doctest: +SKIP
    [-100, -100, -100]
    """

    def __init__(self, tokenizer: "PreTrainedTokenizerBase", template: str = "auto",
                 max_seq_length: int = 512, train_on_prompt: bool = False):
        if tokenizer.eos_token_id is None:
            raise TemplateError("the tokenizer has no EOS token; set tokenizer.eos_token before formatting")
        self.tokenizer = tokenizer
        self.template = resolve_template(template, tokenizer)
        self.max_seq_length = max_seq_length
        self.train_on_prompt = train_on_prompt
        self.rules = TokenRules.from_tokenizer(tokenizer)
        #: One-line notes on what formatting did that the tokenizer or template alone would not have
        #: (training prints them with the banner).
        self.notes: list[str] = []
        if self.template == "chat" and self.rules.bos_ids and not template_writes_bos(tokenizer):
            self.notes.append(f"the tokenizer puts {tokenizer.decode(list(self.rules.bos_ids))!r} before every text "
                              "and the chat template does not write it: each example starts with it once")
        if self.template == "chat" and self.rules.turn_end is None:
            self.notes.append(f"the chat template closes an assistant turn with no special token; every answer "
                              f"is trained with {tokenizer.eos_token!r} (EOS) after it, so the model learns to stop")

    # -- segments ---------------------------------------------------------------------------
    def _ids(self, text: str, split_special: bool = False) -> list[int]:
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=split_special)["input_ids"]

    def _qa_segments(self, messages: list[dict[str, str]]) -> list[tuple[list[int], bool]]:
        # BOS where the tokenizer itself adds one (Llama-2-style sentencepiece, Gemma), once per example.
        segments: list[tuple[list[int], bool]] = [(list(self.rules.bos_ids), False)] if self.rules.bos_ids else []
        for message in messages:
            role, content = message["role"], message["content"]
            # The user's text is text: a literal "<|endoftext|>" in the data must not become a real EOS.
            if role == "system":
                segments.append((self._ids(f"{content}\n", split_special=True), False))
            elif role == "user":
                segments.append((self._ids(f"Question: {content}\nAnswer:", split_special=True), False))
            else:
                segments.append((self._ids(f" {content}", split_special=True) + [self.tokenizer.eos_token_id], True))
        return segments

    def _render(self, messages: list[dict[str, str]], conversation: list[dict[str, str]], **kwargs: Any) -> str:
        try:
            return self.tokenizer.apply_chat_template(conversation, tokenize=False, **kwargs)
        except Exception as exc:  # e.g. a conversation that opens with the assistant, or roles that do not alternate
            roles = ", ".join(m["role"] for m in messages)
            raise TemplateError(f"the chat template cannot render a conversation with roles [{roles}] ({exc}); "
                                "fix that conversation or use --template qa") from None

    def _chat_spans(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int, int, int]]]:
        """The rendered conversation and, per assistant turn, ``(prompt start, text start, text end, answer end)``.

        An answer is the assistant's text as the template wrote it plus what closes the turn, up to and including
        the first special token after it (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``). What the template
        writes between the generation prompt and the text (Qwen3's empty ``<think>`` block) is prompt; what it
        writes after the closing token (a newline, the next turn's header, early Llama-3's trailing assistant
        header) belongs to the next prompt, or to nothing after the last answer. A closing token counts only
        when nothing but white space separates it from the text.
        """
        full = self._render(messages, messages)
        spans: list[tuple[int, int, int, int]] = []
        done = 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix = self._render(messages, messages[:i], add_generation_prompt=True)
            if not full.startswith(prefix) or len(prefix) < done:
                raise TemplateError("the chat template does not render conversations as growing prefixes, so "
                                    "answer tokens cannot be located; use --template qa")
            text = message["content"].strip()
            start = full.find(text, len(prefix))
            if start == -1:
                raise TemplateError(f"the chat template changes the assistant's text {text[:40]!r} when it renders "
                                    "it, so the answer tokens cannot be located; use --template qa")
            text_end = end = start + len(text)
            closing = first_special(full, self.rules.specials, text_end)
            if closing is not None and not full[text_end:closing[0]].strip():  # only white space before it
                end = closing[0] + len(closing[1])
            spans.append((done, start, text_end, end))
            done = end
        return full, spans

    def _chat_segments(self, messages: list[dict[str, str]]) -> list[tuple[list[int], bool]]:
        full, spans = self._chat_spans(messages)
        segments: list[tuple[list[int], bool]] = []
        bos_text = self.tokenizer.decode(list(self.rules.bos_ids)) if self.rules.bos_ids else ""
        if bos_text and not full.startswith(bos_text):  # the tokenizer adds BOS and the template does not write it
            segments.append((list(self.rules.bos_ids), False))
        for prompt_start, text_start, text_end, answer_end in spans:
            segments.append((self._ids(full[prompt_start:text_start]), False))
            # The answer's own text is text (a literal "<|im_end|>" in the data stays characters); the closing is
            # the template's, so its special token is the real one.
            ids = self._ids(full[text_start:text_end], split_special=True) + self._ids(full[text_end:answer_end])
            if answer_end == text_end:  # the template closes the turn with no special token
                ids.append(self.tokenizer.eos_token_id)
            segments.append((ids, True))
        return segments

    def segments(self, messages: list[dict[str, str]]) -> list[tuple[list[int], bool]]:
        """Token-id segments of a conversation, each flagged ``True`` when it is an answer."""
        if self.template == "qa":
            return self._qa_segments(messages)
        return self._chat_segments(messages)

    # -- public -----------------------------------------------------------------------------
    def encode(self, example: Example) -> dict[str, Any]:
        """``{"input_ids", "labels", "length", "truncated"}``, cut to ``max_seq_length`` tokens."""
        input_ids: list[int] = []
        labels: list[int] = []
        for ids, is_answer in self.segments(example.messages):
            input_ids += ids
            labels += ids if (is_answer or self.train_on_prompt) else [IGNORE_INDEX] * len(ids)
        truncated = len(input_ids) > self.max_seq_length
        input_ids, labels = input_ids[: self.max_seq_length], labels[: self.max_seq_length]
        return {"input_ids": input_ids, "labels": labels, "length": len(input_ids), "truncated": truncated}

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The tokens a model sees before it writes the final assistant turn (for generation).

        ``messages`` may end with the assistant turn (it is dropped) or with the user turn.
        """
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        placeholder = [*messages, {"role": "assistant", "content": PROBE_ANSWER}]
        segments = self.segments(placeholder)
        ids: list[int] = []
        for seg, is_answer in segments[:-1]:
            ids += seg
        return ids

    def encode_all(self, examples: list[Example]) -> tuple["datasets.Dataset", FormatStats]:
        """Encode every example into a ``datasets.Dataset`` (columns input_ids, labels, length).

        Examples whose answer tokens were all cut away are left out and counted in the stats.
        """
        import datasets

        stats = FormatStats()
        rows = []
        for index, example in enumerate(examples):
            row = self.encode(example)
            answer_tokens = sum(1 for label in row["labels"] if label != IGNORE_INDEX)
            if answer_tokens == 0 and not self.train_on_prompt:
                stats.dropped_no_answer += 1
                continue
            stats.truncated += row.pop("truncated")
            stats.examples += 1
            stats.lengths.append(row["length"])
            stats.answer_tokens += answer_tokens
            stats.kept.append(index)
            rows.append(row)
        dataset = datasets.Dataset.from_dict({
            "input_ids": [r["input_ids"] for r in rows],
            "labels": [r["labels"] for r in rows],
            "length": [r["length"] for r in rows],
        })
        return dataset, stats
