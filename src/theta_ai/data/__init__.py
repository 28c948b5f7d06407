"""The data pipeline: files -> Examples -> validation reports -> token ids -> batches.

Names are imported lazily: reading and validating files (``formats``, ``mapping``, ``validate``) is plain
Python, and importing them must not pull in torch through ``collate`` or ``tokenize``, so that theta-train
reports a data mistake before the training libraries load.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    **dict.fromkeys(["MarkedCollator", "PaddingCollator", "PackingUnsupportedError", "check_packing_isolation",
                     "mark_batch", "packing_collator"], "collate"),
    **dict.fromkeys(["Example", "LoadResult", "load_examples", "read_file", "record_to_example"], "formats"),
    **dict.fromkeys(["DataMaps", "DataReport", "FileReport", "Source", "mix", "parse_maps", "parse_source"], "mapping"),
    **dict.fromkeys(["IGNORE_INDEX", "ExampleFormatter", "FormatStats", "TemplateError", "resolve_template"],
                    "tokenize"),
    **dict.fromkeys(["DataError", "OverlapReport", "SkippedItem", "find_duplicates", "find_leakage",
                     "summarize_skipped"], "validate"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'theta_ai.data' has no attribute {name!r}")


def __dir__():
    return __all__
