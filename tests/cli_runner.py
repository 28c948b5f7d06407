"""Running a theta_ai command the way a user does, for the tests: in this process through its ``main()``
(:func:`run_main`, no torch import per case) or in a subprocess with every network connection refused and logged
(:data:`NETWORK_GUARD`, written as a ``sitecustomize.py`` on ``PYTHONPATH``)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import warnings
from pathlib import Path

NETWORK_GUARD = """
import os, socket
def _log(what):
    with open(os.environ["THETA_NETWORK_LOG"], "a") as log:
        log.write(repr(what) + "\\n")
_connect = socket.socket.connect
def _guarded(self, address, *args, **kwargs):
    if self.family == getattr(socket, "AF_UNIX", None):
        return _connect(self, address, *args, **kwargs)
    _log(address)
    raise OSError("network access blocked by the theta_ai tests")
_getaddrinfo = socket.getaddrinfo
def _guarded_lookup(host, *args, **kwargs):
    if host in (None, "", "localhost", "127.0.0.1", "::1"):
        return _getaddrinfo(host, *args, **kwargs)
    _log(host)
    raise socket.gaierror("network access blocked by the theta_ai tests")
socket.socket.connect = _guarded
socket.getaddrinfo = _guarded_lookup
"""


def run_main(main, *argv: str, capsys, cwd: Path | None = None, network_log: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``main(argv)`` of a theta_ai command inside this process, read back like the command's own process.

    The command's console handlers are created fresh, so they write to ``capsys``; a ``SystemExit`` (argparse,
    --help) becomes the return code; it runs in ``cwd`` with ``env`` set; with ``network_log`` the sockets are
    guarded as by :data:`NETWORK_GUARD`.
    Everything else main() changes for its process is put back afterwards: logger handlers, levels and filters,
    warning filters, library progress bars and the environment.
    """
    import transformers.utils.logging as hf_logging

    from theta_ai.cli.common import RAW_LOGS_LOGGER

    loggers = [logging.getLogger(name) for name in ("theta_ai", RAW_LOGS_LOGGER, "transformers", "py.warnings")]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    filters = {handler: list(handler.filters) for logger in loggers for handler in logger.handlers}
    for logger in loggers:  # a console handler of an earlier call would write to that call's captured stderr
        for handler in [h for h in logger.handlers if getattr(h, "_theta_console", False)]:
            logger.removeHandler(handler)
    environ, bars, folder = dict(os.environ), hf_logging.is_progress_bar_enabled(), Path.cwd()
    sockets = socket.socket.connect, socket.getaddrinfo
    capsys.readouterr()
    try:
        os.chdir(cwd or folder)
        os.environ.update(env or {})
        if network_log is not None:
            os.environ["THETA_NETWORK_LOG"] = str(network_log)
            exec(NETWORK_GUARD, {})
        with warnings.catch_warnings():
            showwarning = warnings.showwarning
            try:
                code = main(list(argv))
            except SystemExit as exit_:
                code = 0 if exit_.code is None else exit_.code
            finally:
                if warnings.showwarning is not showwarning:  # attach_log_file captured the warnings
                    logging.captureWarnings(False)
    finally:
        os.chdir(folder)
        socket.socket.connect, socket.getaddrinfo = sockets
        for logger, handlers, level, propagate in saved:
            for handler in [h for h in logger.handlers if h not in handlers]:
                logger.removeHandler(handler)
                handler.close()
            logger.handlers[:], logger.propagate = handlers, propagate
            logger.setLevel(level)
        for handler, kept in filters.items():
            handler.filters[:] = kept
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
        os.environ.clear()
        os.environ.update(environ)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(argv), code, out, err)
