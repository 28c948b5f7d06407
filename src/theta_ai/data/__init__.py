"""The data pipeline: files -> Examples -> validation reports -> token ids -> batches."""

from theta_ai.data.collate import (MarkedCollator, PaddingCollator, PackingUnsupportedError, check_packing_isolation,
                                   mark_batch, packing_collator)
from theta_ai.data.formats import Example, LoadResult, load_examples, read_file, record_to_example
from theta_ai.data.mapping import DataMaps, DataReport, FileReport, Source, mix, parse_maps, parse_source
from theta_ai.data.tokenize import IGNORE_INDEX, ExampleFormatter, FormatStats, TemplateError, resolve_template
from theta_ai.data.validate import DataError, OverlapReport, SkippedItem, find_duplicates, find_leakage, summarize_skipped

__all__ = [
    "IGNORE_INDEX", "DataError", "DataMaps", "DataReport", "Example", "ExampleFormatter", "FileReport", "FormatStats",
    "LoadResult", "MarkedCollator", "OverlapReport", "PackingUnsupportedError", "PaddingCollator", "SkippedItem",
    "Source", "TemplateError", "check_packing_isolation", "find_duplicates", "find_leakage", "load_examples",
    "mark_batch", "mix", "packing_collator", "parse_maps", "parse_source", "read_file", "record_to_example",
    "resolve_template", "summarize_skipped",
]
