"""What a run reads and checks before anything heavy is imported: the ``--load-in-4bit``/``8bit`` request
and the training and validation examples.

Nothing here imports torch or transformers (the data readers are plain Python), so a user's mistake in a
path, a record or a flag combination is reported in a second, before the libraries of the training
itself load (10-25 s on a small machine). :func:`theta_ai.training.run.prepare_run` takes the result.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from theta_ai.config import ConfigError, ThetaConfig
from theta_ai.data.formats import Example, load_examples
from theta_ai.data.mapping import DataReport, mix, parse_maps, parse_source, reading_notes
from theta_ai.data.validate import find_duplicates, find_leakage, summarize_skipped
from theta_ai.model.gguf import find_gguf
from theta_ai.model.quantize import check_kbit_request, check_kbit_support, kbit_bits


@dataclass
class RunInputs:
    """The examples a run trains and validates on, what reading them found, and the k-bit width asked for."""

    train: list[Example]
    val: list[Example]
    report: DataReport
    notes: list[str] = field(default_factory=list)  # skipped records, duplicates, leakage, layouts
    kbit: int | None = None


def read_run_inputs(cfg: ThetaConfig) -> RunInputs:
    """The k-bit request checked (before any data is read: a run that cannot honour it stops at once), then the data."""
    bits = kbit_request(cfg)
    notes: list[str] = []
    report = DataReport()
    train, val = load_run_data(cfg, notes, report)
    return RunInputs(train, val, report, notes, bits)


def kbit_request(cfg: ThetaConfig) -> int | None:
    """``--load-in-4bit`` / ``--load-in-8bit`` checked against the other options and this machine: 4, 8 or None."""
    bits = kbit_bits(cfg)
    if bits is not None:
        check_kbit_request(bits, lora=cfg.lora or bool(cfg.resume), model_name=cfg.model_name,
                           gguf=find_gguf(cfg.model_name) is not None)
        check_kbit_support(bits)
    return bits


def split_validation(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded split: the same data, fraction and seed always give the same validation set."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(examples) * fraction))
    if len(examples) - n_val < 1:
        raise ConfigError(f"only {len(examples)} example(s): too few to hold out a validation split; "
                          "add data or pass --val-data")
    val_idx = set(order[:n_val])
    train = [e for i, e in enumerate(examples) if i not in val_idx]
    val = [e for i, e in enumerate(examples) if i in val_idx]
    return train, val


def load_run_data(cfg: ThetaConfig, notes: list[str],
                  report: DataReport | None = None) -> tuple[list[Example], list[Example]]:
    """The training and validation examples: every ``--data`` source read (``--field-map``/``--role-map``), the
    validation split held out before mixing (so weights never change it, nor leak copies into it), then every
    source weighted (``PATH:WEIGHT``, seeded). ``report`` gets each file's layout and each source's counts."""
    if not cfg.data:
        raise ConfigError("no training data: pass --data PATH (a file or folder; see docs/dataset_guide.md) "
                          "or use --preset cpu-quickstart for the bundled sample data")
    maps = parse_maps(cfg.field_map, cfg.role_map)
    sources = [parse_source(entry) for entry in cfg.data]
    loaded = load_examples([s.path for s in sources], skip_invalid=cfg.skip_invalid, maps=maps)
    notes += summarize_skipped(loaded.skipped)
    val_reports = []
    if cfg.val_data:
        val_loaded = load_examples(cfg.val_data, skip_invalid=cfg.skip_invalid, maps=maps)
        notes += summarize_skipped(val_loaded.skipped)
        train, val, val_reports = loaded.examples, val_loaded.examples, val_loaded.reports
    else:
        train, val = split_validation(loaded.examples, cfg.val_split, cfg.seed)
    notes += reading_notes(loaded.reports + val_reports, maps)
    notes += find_duplicates(train).lines()
    notes += find_leakage(train, val).lines()
    owner, start = {}, 0  # id(example) -> the index of its source
    for i, n in enumerate(loaded.per_path):
        owner.update((id(e), i) for e in loaded.examples[start:start + n])
        start += n
    groups: list[list[Example]] = [[] for _ in sources]
    for example in train:
        groups[owner[id(example)]].append(example)
    mixed, counts = mix(groups, [s.weight for s in sources], cfg.seed)
    for entry, source, group, count in zip(cfg.data, sources, groups, counts):
        if group and not count:
            raise ConfigError(f"--data {entry}: weight {source.weight:g} of {len(group)} training example(s) rounds "
                              "to none; raise the weight or leave the source out")
    if report is not None:
        report.files, report.val_files, report.seed = loaded.reports, val_reports, cfg.seed
        report.sources = [(s, len(g), c) for s, g, c in zip(sources, groups, counts)]
    return mixed, val
