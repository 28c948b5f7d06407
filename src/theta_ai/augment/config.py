"""The augmentation config: :class:`AugmentConfig` (probabilities of each operation, read from YAML)
and :class:`AugmentConfigError`."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from theta_ai.config import ConfigError


class AugmentConfigError(ConfigError):
    """A bad augmentation config key or value; the message names the key and how to fix it."""



def _p(default: float, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class AugmentConfig:
    """Probabilities of each augmentation: the defaults are "the default mix".

    Every ``*`` field without ``_rate`` is the probability that the operation is applied to a turn;
    a ``*_rate`` field is the share of eligible words it then touches (at least one).
    With the default mix about three questions in five are changed in a given epoch (62% of the
    bundled sample questions), and a question is seen in ~30 phrasings over 100 epochs.
    Read from YAML with :meth:`from_yaml` (same keys; ``-`` may stand for ``_``).
    """

    # ---- question side (user turns)
    rephrase: float = _p(0.25, "rewrite a recognised 'What is X?'-style question with another template")
    synonym: float = _p(0.3, "replace words/phrases with synonyms from the bundled lexicon")
    synonym_rate: float = _p(0.3, "share of replaceable words replaced when synonym applies (at least one)")
    word_dropout: float = _p(0.1, "drop a few function words (a, the, of, is, ...; never content words or negations)")
    word_dropout_rate: float = _p(0.1, "share of the turn's words dropped when word_dropout applies (at least one)")
    word_swap: float = _p(0.05, "swap one pair of adjacent words, one of them a function word")
    typo: float = _p(0.1, "character typos inside words of 4+ letters (swap, deletion, duplication, neighbouring key)")
    typo_rate: float = _p(0.1, "share of eligible words given a typo when typo applies (at least one)")
    casing: float = _p(0.15, "lowercase the question, or only its first letter")
    punctuation: float = _p(0.2, "drop the final ?/./!, or add one where it is missing")
    # ---- answer side (assistant turns): off unless answer_side is true
    answer_side: bool = _p(False, "also augment answers, with meaning-safe lexicon synonyms only")
    answer_synonym: float = _p(0.2, "with answer_side: probability of synonym replacement in an answer")
    answer_synonym_rate: float = _p(0.1, "with answer_side: share of replaceable answer words replaced")

    #: the per-turn probabilities of the question-side operations, in the order they are applied
    QUESTION_OPS = ("rephrase", "synonym", "word_dropout", "word_swap", "typo", "casing", "punctuation")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "answer_side":
                if not isinstance(value, bool):
                    raise AugmentConfigError(f"answer_side = {value!r}: expected true or false")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise AugmentConfigError(f"{f.name} = {value!r}: expected a number between 0 and 1")
            if not 0.0 <= float(value) <= 1.0:
                kind = "a share of words" if f.name.endswith("_rate") else "a probability"
                raise AugmentConfigError(f"{f.name} = {value!r} is {kind} and must be between 0 and 1")
            setattr(self, f.name, float(value))

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def off(cls, **overrides: Any) -> "AugmentConfig":
        """Every probability 0 (rates keep their defaults), then ``overrides``."""
        zero = {name: 0.0 for name in (*cls.QUESTION_OPS, "answer_synonym")}
        return cls(**{**zero, **overrides})

    @classmethod
    def only(cls, *ops: str, **overrides: Any) -> "AugmentConfig":
        """Only the named operations, each with probability 1: ``AugmentConfig.only("typo")``."""
        for op in ops:
            if op not in (*cls.QUESTION_OPS, "answer_synonym"):
                raise AugmentConfigError(f"unknown operation {op!r}{_closest(op, cls.QUESTION_OPS)}")
        return cls.off(**{op: 1.0 for op in ops}, **overrides)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], origin: str = "augment config") -> "AugmentConfig":
        """Build from a mapping, naming the closest valid key for an unknown one."""
        if not isinstance(mapping, Mapping):
            raise AugmentConfigError(f"{origin}: expected a mapping of key: value, got {type(mapping).__name__}")
        known = cls.keys()
        values = {}
        for raw_key, value in mapping.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise AugmentConfigError(f"{origin}: unknown key {raw_key!r}{_closest(key, known)} "
                                         f"(valid keys: {', '.join(known)})")
            values[key] = value
        try:
            return cls(**values)
        except AugmentConfigError as exc:
            raise AugmentConfigError(f"{origin}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "AugmentConfig":
        """Read a YAML file (``yaml.safe_load``) of ``key: value`` lines, optionally under an ``augment:`` key."""
        from theta_ai.config import safe_load_yaml

        path = Path(path)
        data = safe_load_yaml(path, f"{path}: no such augmentation config file", AugmentConfigError)
        if data is None:
            return cls()
        if isinstance(data, dict) and list(data) == ["augment"]:
            data = data["augment"] or {}
        return cls.from_dict(data, str(path))

    def describe(self) -> str:
        """One line for ``--dry-run``: the probabilities in effect."""
        q = ", ".join(f"{op} {getattr(self, op):g}" for op in self.QUESTION_OPS)
        a = (f"synonym {self.answer_synonym:g} (rate {self.answer_synonym_rate:g})" if self.answer_side
             else "off")
        return f"question side: {q}; answer side: {a}"


def _closest(name: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""
