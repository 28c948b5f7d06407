"""What both commands share: logging set-up, a readable console, and turning user errors into one clear line.

The console (stderr) gets theta_ai's own lines, the progress bar and any warning a library has not been
told about; Trainer's raw log dictionaries go to ``train.log`` (and TensorBoard) only, unless ``--verbose``.
Known-harmless library messages are dropped by their exact text (:data:`KNOWN_HARMLESS_WARNINGS`,
:data:`KNOWN_HARMLESS_LOGS`), never by silencing a whole logger, so a new warning still shows.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Callable

from theta_ai.errors import ThetaError

USER_ERRORS_EXIT = 1
USAGE_EXIT = 2
_FORMAT = "[%(name)s] %(levelname)s %(message)s"


# The logger the training progress callback sends Trainer's raw log dictionaries to (the name is
# theta_ai.training.callbacks.progress.RAW_LOGS_LOGGER; cli/common.py imports nothing from theta_ai but errors).
RAW_LOGS_LOGGER = "theta_ai.trainer_logs"

# Python warnings known to be harmless, by their exact text (``warnings.filterwarnings`` matches from the start).
KNOWN_HARMLESS_WARNINGS: list[tuple[str, type[Warning], str]] = [
    # peft's PeftModel.__init__ reads the deprecated model.is_gradient_checkpointing property (transformers 5.x
    # modeling_utils); theta_ai itself uses activation_checkpointing. Nothing for the user to change.
    (r"`is_gradient_checkpointing` is deprecated and will be removed in v6\. Use `is_activation_checkpointing` "
     r"instead\.", FutureWarning, "peft reads a deprecated transformers property; theta_ai is not affected"),
]
# Library log records known to be harmless: (logger name, exact message regex, why).
KNOWN_HARMLESS_LOGS: list[tuple[str, str, str]] = [
    # The tokenizer warns when a text is longer than model_max_length; theta_ai tokenizes the whole text first and
    # cuts every example to --max-seq-length itself, counting and reporting the cut ones in one warning line.
    ("transformers.tokenization_utils_base",
     r"Token indices sequence length is longer than the specified maximum sequence length for this model "
     r"\(\d+ > \d+\)\. Running this sequence through the model will result in indexing errors",
     "theta_ai truncates to --max-seq-length and reports the count itself"),
]


class KnownHarmlessFilter(logging.Filter):
    """Drops the records of :data:`KNOWN_HARMLESS_LOGS` (exact logger and full message), passes everything else."""

    def __init__(self, rules=None):
        super().__init__()
        self.rules = [(name, re.compile(pattern)) for name, pattern, _ in (rules or KNOWN_HARMLESS_LOGS)]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(record.name == name and pattern.fullmatch(message) for name, pattern in self.rules)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"[theta] {prefix}{record.getMessage()}"


class _Console(logging.StreamHandler):
    """A stderr handler that writes above a live tqdm progress bar instead of through it."""

    _theta_console = True

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = sys.modules.get("tqdm")  # only when something already imported it: no import cost for --help
        if tqdm is None or not getattr(tqdm.tqdm, "_instances", None):
            return super().emit(record)
        try:
            tqdm.tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _console_handler(formatter: logging.Formatter) -> logging.Handler:
    handler = _Console(sys.stderr)
    handler.setFormatter(formatter)
    return handler


def setup_logging() -> logging.Logger:
    logger = logging.getLogger("theta_ai")
    if not any(getattr(h, "_theta_console", False) for h in logger.handlers):
        logger.addHandler(_console_handler(_Format()))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    raw = logging.getLogger(RAW_LOGS_LOGGER)
    raw.setLevel(logging.INFO)
    raw.propagate = False  # train.log always (attach_log_file); the console only with --verbose
    return logger


def configure_console(verbose: bool = False) -> None:
    """The console a newcomer can read: no library progress bars ("Loading weights", "Writing model shards"),
    no known-harmless library messages, no raw Trainer dictionaries. ``verbose=True`` keeps all of them."""
    import transformers.utils.logging as hf_logging

    raw = logging.getLogger(RAW_LOGS_LOGGER)
    has_console = any(getattr(h, "_theta_console", False) for h in raw.handlers)
    if verbose:  # the library bars stay as the library (and HF_HUB_DISABLE_PROGRESS_BARS) set them
        if not has_console:
            raw.addHandler(_console_handler(logging.Formatter("%(message)s")))
        return
    hf_logging.disable_progress_bar()  # transformers' and huggingface_hub's bars; Trainer's own bar is theta_ai's
    for pattern, category, _ in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    hf_logging.get_logger()  # makes sure transformers' own stderr handler exists
    for handler in logging.getLogger("transformers").handlers:
        if not isinstance(handler, logging.FileHandler) and not any(
                isinstance(f, KnownHarmlessFilter) for f in handler.filters):
            handler.addFilter(KnownHarmlessFilter())


def attach_log_file(path: Path) -> None:
    """Copy theta_ai's and transformers' log lines (warnings and Trainer's raw log dictionaries included) into a
    plain-text file. Python warnings keep showing on the console too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("theta_ai", "transformers", RAW_LOGS_LOGGER):
        logging.getLogger(name).addHandler(handler)
    logging.captureWarnings(True)
    py_warnings = logging.getLogger("py.warnings")
    py_warnings.addHandler(handler)
    if not any(getattr(h, "_theta_console", False) for h in py_warnings.handlers):
        # a handler here means logging's last resort no longer prints captured warnings: print them ourselves
        py_warnings.addHandler(_console_handler(logging.Formatter("%(message)s")))


def positive_int(value: str) -> int:
    """An argparse type: a whole number of at least 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def non_negative_int(value: str) -> int:
    """An argparse type: a whole number of at least 0."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {number}")
    return number


def parse_strictly(parser, argv, program: str):
    """``parser.parse_known_args``, but an unknown argument is an error naming the closest valid flag (exit 2)."""
    namespace, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [s for a in parser._actions for s in a.option_strings]
        first = next((u for u in unknown if u.startswith("-")), unknown[0])
        parser.print_usage(sys.stderr)
        print(f"{program}: error: unknown argument {first}{closest_flag(first.split('=')[0], flags)}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT)
    return namespace


def closest_flag(flag: str, flags) -> str:
    match = difflib.get_close_matches(flag, list(flags), n=1, cutoff=0.5)
    return f"; did you mean {match[0]}?" if match else ""


def _close_progress_bars() -> None:
    """End any progress bar a failed run left open, so the error starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def run_guarded(program: str, body: Callable[[], int]) -> int:
    """Run ``body``; a user error becomes one ``program: error: ...`` line and exit code 1."""
    try:
        return body()
    except KeyboardInterrupt:
        _close_progress_bars()
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except ThetaError as exc:
        _close_progress_bars()
        print(f"{program}: error: {exc}", file=sys.stderr)
        return USER_ERRORS_EXIT
