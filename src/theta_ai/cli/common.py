"""What both commands share: logging set-up and turning user errors into one clear line."""

from __future__ import annotations

import difflib
import logging
import sys
from pathlib import Path
from typing import Callable

from theta_ai.errors import ThetaError

USER_ERRORS_EXIT = 1
USAGE_EXIT = 2
_FORMAT = "[%(name)s] %(levelname)s %(message)s"


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"[theta] {prefix}{record.getMessage()}"


def setup_logging() -> logging.Logger:
    logger = logging.getLogger("theta_ai")
    if not any(getattr(h, "_theta_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Format())
        handler._theta_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def attach_log_file(path: Path) -> None:
    """Copy theta_ai's and transformers' log lines (warnings included) into a plain-text file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("theta_ai", "transformers"):
        logging.getLogger(name).addHandler(handler)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(handler)


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


def run_guarded(program: str, body: Callable[[], int]) -> int:
    """Run ``body``; a user error becomes one ``program: error: ...`` line and exit code 1."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except ThetaError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return USER_ERRORS_EXIT
