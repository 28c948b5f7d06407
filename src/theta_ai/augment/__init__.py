"""On-the-fly, seeded augmentation of training examples.

Each training example is rewritten a little differently in every epoch, so a long run (100 epochs
of a few hundred questions) sees many phrasings of each question instead of memorising one::

    aug = Augmenter(AugmentConfig(), seed=42)
    view = aug.augment(example, epoch=3, index=17)   # a new Example; `example` is not modified

``augment`` is a pure function of ``(seed, epoch, index, example)``: the random stream is derived
with SHA-256 from ``f"{seed}:{epoch}:{index}"`` (not Python's salted ``hash``), so runs are
reproducible, a resumed run sees exactly the views it would have seen, and DataLoader workers
need no shared state. Apply it to training examples only; validation and evaluation data stay as
written (that is the caller's choice: nothing here knows about splits).

What is changed
---------------
Question side (``user`` turns), each operation with its own probability per turn
(:class:`AugmentConfig` holds the default mix):

* ``rephrase``: "What is X?" <-> "What's X?" / "Can you explain X?" / "Tell me about X." /
  "Explain X." / "Describe X."; "What are X?", "What does X do?" and "How do I X?" have their own
  families. Only when the whole turn matches a recognised pattern and X reads as a noun phrase;
* ``synonym``: words and short phrases from the bundled lexicon
  (``resources/augment_synonyms.json``), same grammatical form, articles a/an fixed up;
* ``word_dropout``: drops a few function words (articles, prepositions, auxiliaries, pronouns:
  :data:`DROPPABLE`). Content words are never dropped, since dropping one changes what is asked
  ("a merge conflict in Git" -> "a merge in Git"); nor are negations (not, no, never, don't, ...),
  question words, "or"/"only"/"than"-like words, the first word of a sentence, or anything in a
  turn of fewer than four words;
* ``word_swap``: swaps one pair of adjacent words of which at least one is a function word
  ("Why should I" -> "Why I should"; never "hash table" -> "table hash"), no negations, not the
  first word of a sentence;
* ``typo``: a transposition, deletion, duplication or neighbouring-key substitution inside words
  of four letters or more (never the first letter, never an acronym);
* ``casing``: lowercases the whole question, or only its first letter (or capitalises an
  all-lowercase question);
* ``punctuation``: drops the final ``?``/``.``/``!``, or adds one where it is missing.

Answer side (``assistant`` turns), only with ``answer_side: true``: lexicon synonyms and nothing
else. Dropout, swaps, typos, casing and punctuation never touch answers, because the model learns
to *produce* answers: noise there would be learnt as output. The answer-side lexicon also leaves
out the ``question_only_*`` entries (command-like verbs such as run, delete, start). System turns
are never changed.

What is never changed
---------------------
Text is split into protected spans and plain words before any operation, and only plain words are
edited; newlines and indentation are kept byte for byte (spaces change only where word dropout
removes a word together with the spaces after it). Protected: fenced code blocks
(```` ``` ```` or ``~~~``), indented code lines (4 spaces or a tab), inline code, and every
whitespace-separated chunk that contains a digit, a path, URL or e-mail character (``/ \\ @``), an
underscore, a dot, colon or hyphen between letters, a leading dot or dash, code punctuation
(``= < > ( ) [ ] { } $ % # & * | ^ ~ + ```), or camelCase: so URLs, numbers, versions (3.11),
IPs (192.168.1.1), ports, file paths (/etc/hosts, C:\\Windows\\System32, ~/.ssh/id_rsa, setup.py),
identifiers (``__init__``, os.path, getUserName), flags (--dry-run) and hyphenated terms (Wi-Fi)
pass through unchanged. Sentence punctuation stuck to the end of such a chunk (``setup.py?``)
is split off first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import TYPE_CHECKING, Iterable

# Besides what Augmenter needs, these imports re-export every public name the single-module
# theta_ai.augment had (ConfigError, the token kinds, the word classes), so old imports keep working.
from theta_ai.augment.config import AugmentConfig, AugmentConfigError, ConfigError
from theta_ai.augment.lexicon import Lexicon, load_lexicon
from theta_ai.augment.operations import _op_casing, _op_punctuation, _op_rephrase, _op_synonym, _op_typo, _op_word_dropout, _op_word_swap
from theta_ai.augment.spans import BLOCK, CODE, PROT, PUNCT, WORD, WS, protected_spans, tokenize
from theta_ai.augment.words import DROPPABLE, NEGATIONS, PARTICLES, QUESTION_STARTERS, STOPWORDS, WH_WORDS

if TYPE_CHECKING:  # pragma: no cover
    from theta_ai.data.formats import Example

__all__ = [
    "AugmentConfig", "AugmentConfigError", "Augmenter", "Lexicon", "load_lexicon", "preview",
    "protected_spans", "tokenize",
]


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class Augmenter:
    """Seeded, per-epoch augmentation of :class:`~theta_ai.data.formats.Example` objects.

    >>> aug = Augmenter(AugmentConfig.only("rephrase"), seed=0)
    >>> aug.augment_text("What is DNS?", epoch=0, index=0) in {"What's DNS?", "Can you explain DNS?",
    ...     "Tell me about DNS.", "Explain DNS.", "Describe DNS."}
    True

    Every operation draws from its own random stream, derived from
    ``(seed, epoch, index, turn, operation)``, so turning one operation on or off does not change
    what the others do. The object holds no mutable state and pickles cheaply (DataLoader workers).
    """

    def __init__(self, config: AugmentConfig | None = None, seed: int = 0, lexicon: Lexicon | None = None):
        self.config = config if config is not None else AugmentConfig()
        self.seed = int(seed)
        self.lexicon = lexicon if lexicon is not None else load_lexicon()
        self._question_lexicon = self.lexicon.question
        self._answer_lexicon = self.lexicon.both

    def __repr__(self) -> str:
        return f"Augmenter(seed={self.seed}, {self.config.describe()})"

    def augment(self, example: "Example", epoch: int, index: int) -> "Example":
        """A new Example with user turns (and, with ``answer_side``, assistant turns) augmented.

        A pure function of ``(seed, epoch, index, example)``; ``example`` itself is not modified.
        """
        messages = []
        for turn, message in enumerate(example.messages):
            role, content = message.get("role"), message.get("content")
            new = dict(message)
            if isinstance(content, str):
                if role == "user":
                    new["content"] = self.augment_text(content, epoch, index, turn=turn)
                elif role == "assistant" and self.config.answer_side:
                    new["content"] = self.augment_text(content, epoch, index, turn=turn, role="assistant")
            messages.append(new)
        return dataclasses.replace(example, messages=messages, meta=dict(example.meta))

    def augment_text(self, text: str, epoch: int, index: int, turn: int = 0, role: str = "user") -> str:
        """Augment one turn's text as :meth:`augment` would (``role`` "user" or "assistant")."""
        cfg = self.config

        def fires(op: str, probability: float) -> random.Random | None:
            rng = _rng(self.seed, epoch, index, turn, op)
            return rng if probability > 0 and rng.random() < probability else None

        if role == "assistant":
            rng = fires("answer_synonym", cfg.answer_synonym)
            return _op_synonym(text, rng, self._answer_lexicon, cfg.answer_synonym_rate) if rng else text
        if role != "user":
            return text
        if rng := fires("rephrase", cfg.rephrase):
            text = _op_rephrase(text, rng)
        if rng := fires("synonym", cfg.synonym):
            text = _op_synonym(text, rng, self._question_lexicon, cfg.synonym_rate)
        if rng := fires("word_dropout", cfg.word_dropout):
            text = _op_word_dropout(text, rng, cfg.word_dropout_rate)
        if rng := fires("word_swap", cfg.word_swap):
            text = _op_word_swap(text, rng)
        if rng := fires("typo", cfg.typo):
            text = _op_typo(text, rng, cfg.typo_rate)
        if rng := fires("casing", cfg.casing):
            text = _op_casing(text, rng)
        if rng := fires("punctuation", cfg.punctuation):
            text = _op_punctuation(text, rng)
        return text


def preview(examples: Iterable["Example"], augmenter: Augmenter, n: int = 3, epoch: int = 0) -> list[tuple[str, str]]:
    """Up to ``n`` ``(original question, augmented question)`` pairs for ``--dry-run --augment``.

    The first ``n`` examples whose question the given epoch actually changes, each augmented at its
    own index (so the pair is exactly what training will see); fewer when fewer change.
    """
    pairs: list[tuple[str, str]] = []
    if n <= 0:
        return pairs
    for index, example in enumerate(examples):
        after = augmenter.augment(example, epoch, index).question
        if after != example.question:
            pairs.append((example.question, after))
            if len(pairs) == n:
                break
    return pairs
