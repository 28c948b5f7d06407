"""What ``theta-train --dry-run`` prints: the resolved configuration, token statistics, one formatted example with
its label mask, and an augmentation preview."""

from __future__ import annotations

from typing import TYPE_CHECKING

from theta_ai.augment import preview
from theta_ai.data.tokenize import IGNORE_INDEX

if TYPE_CHECKING:  # pragma: no cover
    from theta_ai.training.run import PreparedRun


def describe_example(run: "PreparedRun", index: int = 0) -> list[str]:
    """One formatted training example with its label mask, for ``--dry-run``."""
    example = run.train_examples[index]
    row = run.formatter.encode(example)
    tok = run.loaded.tokenizer
    masked = [i for i, label in zip(row["input_ids"], row["labels"]) if label == IGNORE_INDEX]
    trained = [i for i, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    lines = [f"formatted example ({example.source}): {row['length']} tokens, {len(masked)} masked, {len(trained)} trained"]
    marks = "".join("_" if label == IGNORE_INDEX else "^" for label in row["labels"])
    lines.append(f"  full text      : {tok.decode(row['input_ids'])!r}")
    lines.append(f"  label mask     : {marks}  (_ = -100, ^ = trained)")
    lines.append(f"  trained tokens : {tok.decode(trained)!r}")
    return lines


def dry_run_report(run: "PreparedRun") -> list[str]:
    """The dry run's report lines for a prepared run."""
    lines = ["resolved configuration:"]
    for key, value in run.cfg.as_dict().items():
        source = run.cfg.sources.get(key, "")
        lines.append(f"  {key:<22} {value!r}" + (f"   ({source})" if source and source != "default" else ""))
    lines += run.data_report.file_lines() if run.data_report else []
    lines.append(f"train tokens: {run.train_stats.summary()}")
    lines.append(f"validation tokens: {run.val_stats.summary()}")
    lines += describe_example(run)
    if run.augmenter is not None:

        lines.append(f"augmentation: {run.augmenter.config.describe()}")
        for original, augmented in preview(run.train_examples, run.augmenter, n=3):
            lines.append(f"  original : {original!r}")
            lines.append(f"  augmented: {augmented!r}")
    return lines
