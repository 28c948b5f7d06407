"""Examples -> ``input_ids`` + ``labels``, with the loss on answers only.

Two templates:

* ``qa`` (models without a chat template): ``Question: {question}\\nAnswer: {answer}<eos>``;
  a system message becomes a first line, and every turn of a conversation repeats the pattern.
* ``chat``: the tokenizer's own chat template. Each assistant turn is found by rendering the
  conversation up to that turn with and without it, so the split is exact for any template.

The text is tokenized segment by segment (prompt, answer, prompt, answer, ...), so the mask is
set **by position**: prompt tokens get label ``-100``, answer tokens and the EOS that ends each
answer keep their ids. Nothing compares token ids with the pad id (GPT-2's pad *is* its EOS).
Generation builds its prompt from the very same segments (:meth:`ExampleFormatter.prompt_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from theta_ai.data.formats import Example
from theta_ai.errors import TemplateError  # noqa: F401 (defined in errors.py)

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

    # -- segments ---------------------------------------------------------------------------
    def _ids(self, text: str, split_special: bool = False) -> list[int]:
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=split_special)["input_ids"]

    def _qa_segments(self, messages: list[dict[str, str]]) -> list[tuple[list[int], bool]]:
        segments: list[tuple[list[int], bool]] = []
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

    def _chat_segments(self, messages: list[dict[str, str]]) -> list[tuple[list[int], bool]]:
        def render(conversation: list[dict[str, str]], **kwargs: Any) -> str:
            try:
                return self.tokenizer.apply_chat_template(conversation, **kwargs)
            except Exception as exc:  # e.g. a conversation that opens with the assistant, or roles that do not alternate
                roles = ", ".join(m["role"] for m in messages)
                raise TemplateError(f"the chat template cannot render a conversation with roles [{roles}] ({exc}); "
                                    "fix that conversation or use --template qa") from None

        segments: list[tuple[list[int], bool]] = []
        done = ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = render(messages[:i], add_generation_prompt=True, tokenize=False)
            full = render(messages[: i + 1], tokenize=False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise TemplateError("the chat template does not render conversations as growing prefixes, so "
                                    "answer tokens cannot be located; use --template qa")
            segments.append((self._ids(prompt[len(done):]), False))
            segments.append((self._ids(full[len(prompt):]), True))
            done = full
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
        placeholder = [*messages, {"role": "assistant", "content": "x"}]
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
