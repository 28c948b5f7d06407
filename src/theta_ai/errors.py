"""Every error a user can meet, in one place: each says what went wrong, where, and how to fix it.

The command-line tools turn any :class:`ThetaError` into one ``theta-train: error: ...`` line and exit
code 1; a library caller catches ``ThetaError`` (or one kind). Each kind also keeps the built-in base it
always had (``ValueError`` for bad input, ``RuntimeError`` for a run that cannot go on), so older
``except ValueError`` code still works. Imports nothing.
"""

from __future__ import annotations


class ThetaError(Exception):
    """Base of every error theta_ai raises for something the user can fix."""


class ConfigError(ThetaError, ValueError):
    """A bad preset name, config file, key or value; the message says how to fix it."""


class DataError(ThetaError, ValueError):
    """A problem in the user's data, with where it is and how to fix it.

    >>> str(DataError("train.jsonl", "line 3", "answer", "is empty", "write the answer text"))
    'train.jsonl, line 3, field "answer": is empty. Fix: write the answer text.'
    """

    def __init__(self, file: str, where: str | None, field: str | None, problem: str, fix: str):
        self.file = str(file)
        self.where = where
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(self.describe())

    def describe(self) -> str:
        place = self.file
        if self.where:
            place += f", {self.where}"
        if self.field:
            place += f', field "{self.field}"'
        return f"{place}: {self.problem}. Fix: {self.fix}."


class TemplateError(ThetaError, ValueError):
    """The requested template cannot be used with this tokenizer."""


class PackingUnsupportedError(ThetaError, RuntimeError):
    """The model would let packed examples attend to each other."""


class ModelLoadError(ThetaError, RuntimeError):
    """The model or tokenizer could not be loaded; the message says why and what to do."""


class WeightLoadError(ThetaError, RuntimeError):
    """A model folder's weights cannot be loaded into the model (missing files, keys or shapes differ)."""


class DiskSpaceError(ThetaError, RuntimeError):
    """Not enough free disk space for the next checkpoint; the earlier checkpoints are intact."""


class RunLockedError(ThetaError, RuntimeError):
    """Another theta-train process is using this checkpoint folder."""


class TrainingOOMError(ThetaError, RuntimeError):
    """CUDA ran out of memory; the message gives the peak reached and settings that fit."""
