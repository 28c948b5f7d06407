"""Human-readable views of a theta-eval result: the Markdown report and the terminal summary.

Both are pure functions of :class:`~theta_ai.eval.runner.EvalResult` returning text; the CLI prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from theta_ai.monitoring.plot import PLOT_FILE

if TYPE_CHECKING:  # pragma: no cover
    from theta_ai.eval.runner import EvalResult

METRIC_LABELS = {
    "exact_match": "exact match", "f1": "token F1", "answer_recall": "answer recall", "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum", "bleu": "BLEU (0-100)",
    "chrf": "chrF (0-100)", "perplexity": "answer perplexity", "answer_tokens": "answer tokens",
}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(text: str, limit: int = 160) -> str:
    """Text made safe for one Markdown table cell."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|") or "*(empty)*"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return lines


def examples_table(rows: Sequence[dict]) -> str:
    """A Markdown table of prediction rows (also used as TensorBoard text)."""
    body = [[str(r["index"]), _cell(r["domain"], 30), r["category"], r["rougeL"], r["f1"], _cell(r["question"]),
             _cell(r["reference"]), _cell(r["prediction"])] for r in rows]
    return "\n".join(_table(["#", "domain", "category", "ROUGE-L", "F1", "question", "reference", "prediction"], body))


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in (text.splitlines() or [""])) if text.strip() else "> *(empty)*"


def training_plot(results: Mapping[str, Any]) -> Path | None:
    """The ``loss.png`` of the training run that wrote the evaluated model, when it can be found.

    ``theta_run.json`` records it as ``loss_plot`` (an absolute path); older checkpoints only have ``log_dir``,
    relative to the folder theta-train ran in, which is tried from the current folder and from each folder
    above the model.
    """
    info = results.get("run_info") or {}
    candidates = [Path(info["loss_plot"])] if info.get("loss_plot") else []
    if info.get("log_dir"):
        log_dir = Path(info["log_dir"])
        candidates.append(log_dir / PLOT_FILE)
        if not log_dir.is_absolute() and results.get("model_path"):
            candidates += [parent / log_dir / PLOT_FILE for parent in Path(results["model_path"]).parents]
    return next((path.resolve() for path in candidates if path.is_file()), None)


def render_markdown(result: "EvalResult", report_dir: str | Path | None = None) -> str:
    """The eval_report.md text: metrics, categories, domains, lengths, worst examples, example responses.

    ``report_dir`` (where the report is written) makes the link to the training run's ``loss.png`` relative;
    without it the link is the absolute path.
    """
    res = result.results
    settings = res["settings"]
    gen = res["generation"]
    lines = ["# theta-eval report", ""]
    if "model_path" in res:
        lines += [f"- model: `{res['model_path']}`", f"- data: {', '.join(f'`{d}`' for d in res['data'])}"]
    plot = training_plot(res)
    if plot is not None:
        lines.append(f"- training curves (loss.png of the run that trained this model): `{plot}`")
    lines += [
        f"- examples: {res['num_examples']}; greedy decoding, batch size {settings['batch_size']}, "
        f"max new tokens {settings['max_new_tokens']}, template `{settings['template']}`, "
        f"device {settings['device']} ({settings['dtype']}), seed {settings['seed']}",
        f"- generation: {gen['hit_eos']} stopped at EOS, {gen['ran_on']} ran on into a new `Question:` turn (cut there), "
        f"{gen['truncated']} hit the token limit, {gen['prompt_truncated']} prompt(s) cut to fit the context",
    ]
    if plot is not None:
        shown = os.path.relpath(plot, report_dir) if report_dir is not None else str(plot)
        lines += ["", f"![training and validation loss](<{shown}>)"]
    lines += ["", "## Metrics", ""]
    lines += _table(["metric", "value"], [[METRIC_LABELS.get(k, k), v] for k, v in res["metrics"].items()])
    lines += ["", f"- BLEU signature: `{res['signatures']['bleu']}`", f"- chrF signature: `{res['signatures']['chrf']}`",
              f"- ROUGE: {res['signatures']['rouge']}",
              "- exact match, F1 and answer recall use SQuAD normalization (lower-case, no punctuation, no a/an/the); "
              "answer perplexity = exp(mean teacher-forced loss on answer tokens)", ""]

    lines += ["## Error categories", "",
              "Each example gets the first category whose rule matches, in this order:", ""]
    lines += [f"{i}. **{cat}**: {res['category_rules'][cat]}" for i, cat in enumerate(res["category_precedence"], 1)]
    lines.append("")
    cat_rows = []
    for cat, row in res["per_category"].items():
        cat_rows.append([cat, row["count"], f"{row['share']:.1%}", row.get("exact_match"), row.get("f1"),
                         row.get("rougeL"), row.get("answer_recall"), row.get("pred_words"), row.get("ref_words")])
    lines += _table(["category", "count", "share", "EM", "F1", "ROUGE-L", "recall", "pred words", "ref words"], cat_rows)

    lines += ["", "## Per domain", ""]
    cats = res["category_precedence"]
    dom_rows = []
    for domain, row in res["per_domain"].items():
        counts = ", ".join(f"{c} {row['categories'][c]}" for c in cats if row["categories"][c])
        dom_rows.append([_cell(domain, 40), row["count"], row["exact_match"], row["f1"], row["rougeL"],
                         row["answer_recall"], row["bleu"], row["chrf"], row["perplexity"], counts])
    lines += _table(["domain", "n", "EM", "F1", "ROUGE-L", "recall", "BLEU", "chrF", "perplexity", "categories"],
                    dom_rows)

    lengths = res["lengths"]
    lines += ["", "## Lengths (words)", ""]
    lines += _table(["", "mean", "median", "p90", "max"],
                    [[name, lengths[name]["mean"], lengths[name]["median"], lengths[name]["p90"], lengths[name]["max"]]
                     for name in ("prediction", "reference")])
    lines += ["", f"- mean prediction / mean reference length: {lengths['mean_ratio']:.2f}",
              f"- predictions under half the reference length: {lengths['much_shorter']}; "
              f"over twice: {lengths['much_longer']}",
              f"- generated tokens per answer (mean, EOS included): {lengths['generated_tokens_mean']:.1f}", ""]

    lines += ["## Worst examples (lowest ROUGE-L)", "", examples_table(res["worst_examples"]), ""]
    lines += ["## Example responses", ""]
    for group in ("best", "median", "worst"):
        lines += [f"### {group.capitalize()}", ""]
        for row in res["example_responses"][group]:
            lines += [f"**#{row['index']}** ({row['domain']}, {row['category']}, ROUGE-L {row['rougeL']:.3f}, "
                      f"F1 {row['f1']:.3f})", "", "Question:", _quote(row["question"]), "", "Reference:",
                      _quote(row["reference"]), "", "Prediction:", _quote(row["prediction"]), ""]
    timings = res["timings"]
    lines += ["## Timings", "", ", ".join(f"{k} {_fmt(v, 2)}" for k, v in timings.items()), ""]
    return "\n".join(lines)


def summary_lines(result: "EvalResult") -> list[str]:
    """A compact plain-text summary for the terminal."""
    res = result.results
    m = res["metrics"]
    lines = [f"theta-eval: {res['num_examples']} examples" + (f", model {res['model_path']}" if "model_path" in res else "")]
    width = max(len(v) for v in METRIC_LABELS.values())
    for key, value in m.items():
        lines.append(f"  {METRIC_LABELS.get(key, key):<{width}}  {_fmt(value)}")
    lines.append("categories: " + ", ".join(f"{cat} {row['count']}" for cat, row in res["per_category"].items()
                                              if row["count"]))
    lines.append(f"  {'domain':<20} {'n':>5} {'EM':>7} {'F1':>7} {'ROUGE-L':>8} {'BLEU':>7}")
    for domain, row in res["per_domain"].items():
        lines.append(f"  {domain[:20]:<20} {row['count']:>5} {row['exact_match']:>7.4f} {row['f1']:>7.4f} "
                     f"{row['rougeL']:>8.4f} {row['bleu']:>7.2f}")
    gen, t = res["generation"], res["timings"]
    lines.append(f"generation: {gen['hit_eos']} stopped at EOS, {gen['truncated']} hit --max-new-tokens, "
                 f"{gen['ran_on']} ran on; {t['generation_s']:.1f} s ({_fmt(t.get('examples_per_s'), 1)} examples/s)")
    return lines
