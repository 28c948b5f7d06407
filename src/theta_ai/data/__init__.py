"""The data pipeline: files -> Examples -> validation reports -> token ids -> batches."""

from theta_ai.data.collate import (MarkedCollator, PaddingCollator, PackingUnsupportedError, check_packing_isolation,
                                   mark_batch, packing_collator)
from theta_ai.data.formats import Example, LoadResult, load_examples, read_file, record_to_example
from theta_ai.data.tokenize import IGNORE_INDEX, ExampleFormatter, FormatStats, TemplateError, resolve_template
from theta_ai.data.validate import DataError, OverlapReport, SkippedItem, find_duplicates, find_leakage, summarize_skipped

__all__ = [
    "DataError", "Example", "ExampleFormatter", "FormatStats", "IGNORE_INDEX", "LoadResult", "MarkedCollator",
    "OverlapReport", "PackingUnsupportedError", "PaddingCollator", "SkippedItem", "TemplateError",
    "check_packing_isolation", "find_duplicates", "find_leakage", "load_examples", "mark_batch", "packing_collator",
    "read_file", "record_to_example", "resolve_template", "summarize_skipped",
]
