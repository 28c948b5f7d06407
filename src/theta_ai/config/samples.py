"""The sample data shipped inside the package, and the ``sample:NAME`` paths that name it.

``theta_ai/resources/sample_data/`` holds ``theta_sample_train.json`` (336 question/answer pairs),
``theta_sample_val.json`` (60 paraphrased questions) and ``theta_sample_conversations.jsonl``
(20 multi-turn conversations). They are package data, so they are found with
:func:`importlib.resources.files` wherever theta_ai is installed (wheel, editable or source
checkout) and whatever the current folder is.

Anywhere a data path is accepted in the configuration (``--data``, ``--val-data``, the ``data:`` /
``val_data:`` keys of a YAML config, a preset), ``sample:NAME`` stands for one of these files;
:func:`theta_ai.config.resolve_config` turns it into the real path::

    theta-train --data sample:theta_sample_conversations.jsonl --model-name theta-tiny
    python -c "from theta_ai.config.samples import sample_path; print(sample_path('theta_sample_train.json'))"
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from theta_ai.config.options import closest
from theta_ai.errors import ConfigError

SAMPLE_PREFIX = "sample:"
_SAMPLE_DIR = "resources/sample_data"


def sample_dir() -> Path:
    """The folder of the shipped sample data (inside the installed package)."""
    folder = resources.files("theta_ai").joinpath(_SAMPLE_DIR)
    if not isinstance(folder, Path):  # e.g. imported from a zip archive: no real files to hand to the loaders
        raise ConfigError(f"the sample data lies in {folder}, which is not a folder on disk; "
                          "install theta_ai unpacked (pip install theta_ai) to use sample: paths")
    return folder


def sample_names() -> list[str]:
    """The names ``sample:NAME`` accepts, sorted."""
    return sorted(p.name for p in sample_dir().iterdir() if p.is_file() and not p.name.startswith((".", "_")))


def sample_path(name: str) -> Path:
    """The path of the shipped sample file ``name`` (``theta_sample_train.json``, ...); a ``sample:`` prefix is allowed.

    An unknown name is a :class:`~theta_ai.config.ConfigError` listing the available names.
    """
    if name.startswith(SAMPLE_PREFIX):
        name = name[len(SAMPLE_PREFIX):]
    names = sample_names()
    if name not in names:
        raise ConfigError(f"unknown sample data {name!r}{closest(name, names)} "
                          f"(sample data: {', '.join(names)})")
    return sample_dir() / name


def resolve_sample_paths(paths: list[str] | None, origin: str | None = None) -> list[str] | None:
    """``paths`` with every ``sample:NAME`` entry replaced by the real path (other entries unchanged).

    ``origin`` (e.g. ``"--data (from command line)"``) prefixes the error message of an unknown name.
    """
    if not paths:  # [] or None (a bare ``data:`` key in YAML) pass through unchanged
        return paths
    out = []
    for path in paths:
        if isinstance(path, str) and path.startswith(SAMPLE_PREFIX):
            try:
                out.append(str(sample_path(path)))
            except ConfigError as exc:
                if origin is None:
                    raise
                raise ConfigError(f"{origin}: {exc}") from None
        else:
            out.append(path)
    return out
