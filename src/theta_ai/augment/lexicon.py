"""The synonym lexicon: :class:`Lexicon` and the bundled one, :func:`load_lexicon`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping


@dataclass(frozen=True)
class Lexicon:
    """Synonyms keyed by lowercase word tuples: ``("thank", "you") -> ("thanks",)``."""

    both: dict[tuple[str, ...], tuple[str, ...]]
    question_only: dict[tuple[str, ...], tuple[str, ...]]

    @property
    def question(self) -> dict[tuple[str, ...], tuple[str, ...]]:
        return {**self.both, **self.question_only}

    @property
    def size(self) -> int:
        """Number of distinct headwords and phrases."""
        return len(set(self.both) | set(self.question_only))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Lexicon":
        def expand(groups: list[list[str]], one_way: Mapping[str, list[str]]) -> dict:
            out: dict[tuple[str, ...], list[str]] = {}
            for group in groups:
                for word in group:
                    out.setdefault(_key(word), []).extend(w for w in group if w != word)
            for word, reps in one_way.items():
                out.setdefault(_key(word), []).extend(reps)
            return {k: tuple(dict.fromkeys(v)) for k, v in out.items()}

        return cls(expand(data.get("groups", []), data.get("one_way", {})),
                   expand(data.get("question_only_groups", []), data.get("question_only_one_way", {})))


def _key(phrase: str) -> tuple[str, ...]:
    return tuple(phrase.lower().replace("\u2019", "'").split())


@lru_cache(maxsize=1)
def load_lexicon() -> Lexicon:
    """The bundled lexicon, ``theta_ai/resources/augment_synonyms.json``."""
    text = resources.files("theta_ai").joinpath("resources/augment_synonyms.json").read_text(encoding="utf-8")
    return Lexicon.from_json(json.loads(text))
