"""Talking to a trained model: a multi-turn conversation through the training template, streamed.

>>> from theta_ai.eval.chat import ChatSession, ChatSettings
>>> from theta_ai.eval.runner import load_eval_model
>>> loaded = load_eval_model("models/theta_best")                     # doctest: +SKIP
>>> chat = ChatSession(loaded.model, loaded.tokenizer, loaded.formatter, ChatSettings(system="Be brief."))
>>> chat.reply("What is DNS?", on_text=lambda s: print(s, end="")).text  # doctest: +SKIP

Every prompt is the training prompt of the conversation so far (:meth:`ExampleFormatter.prompt_ids` over the
system message, the earlier turns and the new question), so a model trained with a chat template is asked
exactly as it was trained, and one trained with the ``qa`` template sees ``Question: ...\\nAnswer:`` turns.
Generation stops on the same tokens as theta-eval (:func:`theta_ai.model.tokens.stop_token_ids`), and a
``qa`` answer that runs on into a ``Question:`` turn is cut there, before that text is shown. Greedy unless
``temperature`` > 0. A conversation longer than the model's context loses its oldest turns first, with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from theta_ai.errors import ConfigError
from theta_ai.eval.generation import _NEXT_TURN, context_length
from theta_ai.model.tokens import stop_token_ids

if TYPE_CHECKING:  # pragma: no cover
    from theta_ai.data import ExampleFormatter

_TURN_WORD = "Question:"


@dataclass
class ChatSettings:
    """How theta-chat generates (its flags)."""

    system: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy, the same answer every time
    top_p: float = 1.0
    seed: int = 42

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"--temperature must not be negative, got {self.temperature:g} (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p:g}")


@dataclass
class ChatReply:
    """One answer: its text, how it ended, and notes about the prompt (turns left out to fit the context)."""

    text: str
    hit_eos: bool = False
    ran_on: bool = False
    interrupted: bool = False
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


def _held_back(text: str) -> int:
    """How many trailing characters might be the start of a ``Question:`` turn (shown only once it is not)."""
    for size in range(min(len(text), len(_TURN_WORD)), 0, -1):
        if _TURN_WORD.startswith(text[-size:]):
            return size
    return 0


class _AnswerStream:
    """A ``generate`` streamer: decodes the new tokens, passes on the text that is certainly answer."""

    def __init__(self, tokenizer, stops: set[int], on_text: Callable[[str], None] | None, cut_turns: bool):
        self.tokenizer, self.stops, self.on_text, self.cut_turns = tokenizer, stops, on_text, cut_turns
        self.tokens: list[int] = []
        self.shown = ""
        self.ran_on = False
        self.hit_eos = False
        self._prompt_seen = False

    def text(self) -> str:
        raw = self.tokenizer.decode(self.tokens, skip_special_tokens=True).lstrip()
        if self.cut_turns:
            match = _NEXT_TURN.search(raw)
            if match:
                self.ran_on = True
                return raw[: match.start()].rstrip()
        return raw

    def _emit(self, upto: str) -> None:
        if len(upto) > len(self.shown) and upto.startswith(self.shown):
            new, self.shown = upto[len(self.shown):], upto
            if self.on_text is not None:
                self.on_text(new)

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() hands the prompt over first
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            if token in self.stops:
                self.hit_eos = True
                continue
            if not self.hit_eos:
                self.tokens.append(token)
        text = self.text()
        if not self.ran_on and self.cut_turns:
            text = text[: len(text) - _held_back(text)]
        self._emit(text.rstrip())  # white space is shown once something follows it

    def end(self) -> None:
        self._emit(self.text().rstrip())


class _StopOnRunOn:
    """Stop generating once the answer ran on into a ``Question:`` turn (qa template)."""

    def __init__(self, stream: _AnswerStream):
        self.stream = stream

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.stream.ran_on, dtype=torch.bool, device=input_ids.device)


class ChatSession:
    """A conversation with a loaded model; ``history`` holds the user and assistant turns so far."""

    def __init__(self, model, tokenizer, formatter: "ExampleFormatter", settings: ChatSettings | None = None):
        self.model, self.tokenizer, self.formatter = model, tokenizer, formatter
        self.settings = settings or ChatSettings()
        self.settings.check()
        self.history: list[dict[str, str]] = []
        self.context = context_length(model)
        if self.context is not None and self.settings.max_new_tokens >= self.context:
            raise ConfigError(f"--max-new-tokens {self.settings.max_new_tokens} leaves no room for the prompt in "
                              f"this model's context of {self.context} tokens; lower it")

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.history = []

    def _messages(self, history: list[dict[str, str]], text: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        return [*system, *history, {"role": "user", "content": text}]

    def prompt_for(self, text: str) -> tuple[list[int], list[str]]:
        """The prompt ids for the next answer, and notes on what had to be left out to fit the context."""
        history, notes = list(self.history), []
        ids = self.formatter.prompt_ids(self._messages(history, text))
        if self.context is None:
            return ids, notes
        room = self.context - self.settings.max_new_tokens
        dropped = 0
        while len(ids) > room and history:
            history = history[2:]  # the oldest question and its answer
            dropped += 1
            ids = self.formatter.prompt_ids(self._messages(history, text))
        if dropped:
            notes.append(f"the oldest {dropped} turn(s) were left out to fit the model's context of {self.context} "
                         f"tokens with --max-new-tokens {self.settings.max_new_tokens}")
        if len(ids) > room:
            notes.append(f"the question is longer than the {room} tokens the context leaves; only its last {room} "
                         "tokens are used")
            ids = ids[-room:]
        return ids, notes

    def reply(self, text: str, on_text: Callable[[str], None] | None = None) -> ChatReply:
        """Answer ``text``, passing the answer to ``on_text`` piece by piece as it is generated.

        A ``KeyboardInterrupt`` while generating (Ctrl+C) ends this answer, not the session: what was generated
        so far is the answer (``interrupted=True``) and stays in the history.
        """
        import torch

        ids, notes = self.prompt_for(text)
        stops = stop_token_ids(self.model, self.tokenizer)
        stream = _AnswerStream(self.tokenizer, set(stops), on_text, cut_turns=self.formatter.template == "qa")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        sample = self.settings.temperature > 0
        options = dict(do_sample=True, temperature=self.settings.temperature, top_p=self.settings.top_p) if sample \
            else dict(do_sample=False)
        interrupted = False
        torch.manual_seed(self.settings.seed)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    max_new_tokens=self.settings.max_new_tokens, eos_token_id=stops,
                                    pad_token_id=pad, streamer=stream, stopping_criteria=[_StopOnRunOn(stream)],
                                    **options)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self.model.train(was_training)
        if interrupted:  # show what was held back (a possible "Question:" start): it is the answer now
            stream.end()
        answer = stream.shown.strip()
        reply = ChatReply(text=answer, hit_eos=stream.hit_eos, ran_on=stream.ran_on, interrupted=interrupted,
                          truncated=not (stream.hit_eos or stream.ran_on or interrupted), notes=notes)
        if answer:  # an empty answer is no turn a template could render
            self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        return reply
