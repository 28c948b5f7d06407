"""theta-eval core: load a model folder, generate answers, score them, analyse the errors, write the report.

    model folder -> prompts (ExampleFormatter.prompt_ids) -> batched greedy answers (generation.py)
    -> text metrics (the evaluate modules in theta_ai/metrics) + answer perplexity
    -> categories and tables (error_analysis.py) -> eval_results.json, predictions.jsonl, eval_report.md

>>> from theta_ai.eval.runner import evaluate_model, write_outputs
>>> result = evaluate_model("models/theta_best")              # doctest: +SKIP
>>> result.metrics["rougeL"], result.metrics["perplexity"]   # doctest: +SKIP
>>> write_outputs(result, "models/theta_best/eval")          # doctest: +SKIP

Nothing here prints; the CLI (:mod:`theta_ai.cli.eval`) does. Nothing needs the network: the model
folder must exist locally and the metric modules load from the package's own folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from theta_ai.model import folders as ckpt
from theta_ai.data import DataError, Example, ExampleFormatter, load_examples
from theta_ai.data.mapping import NO_MAPS, DataMaps
from theta_ai.eval.analysis import (CATEGORY_HELP, PRECEDENCE, categorize, category_table, domain_categories,
                             example_responses, length_stats, worst_examples)
from theta_ai.eval.generation import (DEFAULT_MAX_NEW_TOKENS, answer_losses, context_length, fit_prompts,
                                      generate_answers, select_subset)
from theta_ai.metrics import PER_EXAMPLE_KEYS, TEXT_METRIC_KEYS, compute_text_metrics, per_example_scores
from theta_ai.config.samples import resolve_sample_paths
from theta_ai.errors import ModelLoadError
from theta_ai.model.gguf import find_gguf

logger = logging.getLogger("theta_ai")

RESULTS_FILE = "eval_results.json"
PREDICTIONS_FILE = "predictions.jsonl"
REPORT_FILE = "eval_report.md"
EVAL_DIR = "eval"


@dataclass
class EvalSettings:
    """How theta-eval generates and reports (the CLI flags)."""

    batch_size: int = 16
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    num_examples: int = 5
    seed: int = 42
    max_examples: int | None = None

    def check(self) -> None:
        from theta_ai.config import ConfigError

        for name in ("batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.num_examples < 0:
            raise ConfigError(f"--num-examples must not be negative, got {self.num_examples}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError(f"--max-examples must be at least 1, got {self.max_examples}")


@dataclass
class EvalModel:
    """A loaded model folder ready for evaluation."""

    model: Any
    tokenizer: Any
    formatter: ExampleFormatter
    path: Path
    run_info: dict = field(default_factory=dict)


@dataclass
class EvalResult:
    """``results`` is the content of eval_results.json; ``predictions`` the rows of predictions.jsonl."""

    results: dict[str, Any]
    predictions: list[dict[str, Any]]

    @property
    def metrics(self) -> dict[str, float]:
        return self.results["metrics"]


# ---------------------------------------------------------------------------- loading


def check_model_folder(path: str | Path) -> Path:
    """The folder as a Path, or a :class:`ModelLoadError` saying what is wrong with it (never a hub lookup)."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelLoadError(f"--model-path {path} does not exist; check the path")
    if find_gguf(folder) is not None:  # a .gguf file, or a folder holding exactly one
        return folder
    if not folder.is_dir():
        raise ModelLoadError(f"--model-path {path} is a file, not a model folder; point at the folder that holds "
                             "config.json, or at a .gguf file")
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        inside = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "config.json").is_file())
        hint = (f" (it holds model folders: {', '.join(inside[:4])}; e.g. --model-path {folder / inside[0]})"
                if inside else "")
        raise ModelLoadError(f"--model-path {path} holds no model (no config.json){hint}; point it at a theta-train "
                             "checkpoint folder (theta_checkpoint_epoch_N, theta_best, theta_final) or any folder "
                             "written by save_pretrained")
    return folder


def eval_dtype(run_info: dict, device: str) -> str | None:
    """The dtype theta-eval loads weights in: on a GPU the half precision training used (bf16 where the card has
    it when the folder does not say), so generation runs as fast as training did; fp32 on a CPU."""
    import torch

    if not str(device).startswith("cuda"):
        return None
    precision = run_info.get("precision")
    if precision == "fp32":
        return None
    if precision == "fp16":
        return "float16"
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float16"


def load_eval_model(model_path: str | Path, device: str | None = None) -> EvalModel:
    """Load a model folder with its tokenizer and the training prompt format from ``theta_run.json``."""
    import torch

    from theta_ai.model.load import load_model_and_tokenizer

    folder = check_model_folder(model_path)
    try:
        run_info = ckpt.read_run_info(folder)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"{folder / ckpt.RUN_INFO} cannot be read ({exc}); restore or delete it") from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = eval_dtype(run_info, device)
    loaded = load_model_and_tokenizer(str(folder), dtype=dtype)
    # theta-train's own length, or (any other model folder) theta-train's default within the model's context
    max_seq_length = run_info.get("max_seq_length") or min(512, context_length(loaded.model) or 512)
    formatter = ExampleFormatter(loaded.tokenizer, run_info.get("template", "auto"), int(max_seq_length))
    model = loaded.model.to(device)
    model.eval()
    return EvalModel(model, loaded.tokenizer, formatter, folder, run_info)


def default_data(model_path: str | Path) -> Path:
    """The validation examples theta-train stored in the model folder."""
    path = Path(model_path) / ckpt.VALIDATION_FILE
    if not path.is_file():
        raise DataError(str(path), None, None, "does not exist, so there are no stored validation examples "
                        "(the folder was not written by theta-train)", "pass --data FILE with the examples to evaluate")
    return path


def _last_question(example: Example) -> str:
    """The user turn the final answer replies to."""
    messages = example.messages
    end = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return next((m["content"] for m in reversed(messages[:end]) if m["role"] == "user"), "")


# ---------------------------------------------------------------------------- scoring


def _perplexity(losses: Sequence[tuple[float, int]]) -> tuple[float, int]:
    total = sum(n for _, n in losses)
    if not total:
        return float("nan"), 0
    mean_nll = sum(s for s, _ in losses) / total
    return (math.exp(mean_nll) if mean_nll < 700 else float("inf")), total


def _number(value: float) -> float | None:
    """JSON has no NaN/inf: store them as null."""
    return None if value is None or not math.isfinite(value) else float(value)


def evaluate_examples(model, tokenizer, formatter: ExampleFormatter, examples: Sequence[Example],
                      settings: EvalSettings | None = None, *, progress: bool = False) -> EvalResult:
    """Generate, score and analyse ``examples`` with an already loaded model (no files are read or written)."""
    import torch

    settings = settings or EvalSettings()
    settings.check()
    if not examples:
        raise DataError("(data)", None, None, "holds no examples", "pass --data with at least one example")
    torch.manual_seed(settings.seed)
    timings: dict[str, float] = {}

    limit = context_length(model)
    prompt_limit = None if limit is None else limit - settings.max_new_tokens
    if prompt_limit is not None and prompt_limit < 1:
        from theta_ai.config import ConfigError

        raise ConfigError(f"--max-new-tokens {settings.max_new_tokens} leaves no room for the prompt in this "
                          f"model's context of {limit} tokens; lower it")
    prompts, cut = fit_prompts([formatter.prompt_ids(e.messages) for e in examples], prompt_limit)

    start = time.perf_counter()
    generations = generate_answers(model, tokenizer, prompts, batch_size=settings.batch_size,
                                   max_new_tokens=settings.max_new_tokens, progress=progress)
    timings["generation_s"] = time.perf_counter() - start

    start = time.perf_counter()
    losses = answer_losses(model, formatter, examples, batch_size=settings.batch_size, progress=progress)
    timings["perplexity_s"] = time.perf_counter() - start

    start = time.perf_counter()
    predictions = [g.text for g in generations]
    references = [e.answer for e in examples]
    scores = per_example_scores(predictions, references)
    rows = []
    for i, (example, gen, score, (nll, n_tokens)) in enumerate(zip(examples, generations, scores, losses)):
        question = _last_question(example)
        rows.append({
            "index": i, "source": example.source, "domain": example.domain, "question": question,
            "reference": example.answer, "prediction": gen.text,
            "category": categorize(gen.text, example.answer, question, score, gen.truncated),
            **{key: score[key] for key in PER_EXAMPLE_KEYS},
            "answer_loss": _number(nll / n_tokens) if n_tokens else None, "answer_tokens": n_tokens,
            "pred_words": len(gen.text.split()), "ref_words": len(example.answer.split()),
            "prompt_tokens": gen.prompt_tokens, "new_tokens": gen.new_tokens, "hit_eos": gen.hit_eos,
            "ran_on": gen.ran_on, "truncated": gen.truncated, "prompt_truncated": cut[i],
            "raw_prediction": gen.raw_text,
        })

    corpus = compute_text_metrics(predictions, references)
    perplexity, answer_tokens = _perplexity(losses)
    metrics = {key: float(corpus[key]) for key in TEXT_METRIC_KEYS}
    metrics["perplexity"] = _number(perplexity)
    metrics["answer_tokens"] = answer_tokens

    per_domain: dict[str, dict[str, Any]] = {}
    categories_by_domain = domain_categories(rows)
    for domain in sorted({r["domain"] for r in rows}):
        idx = [r["index"] for r in rows if r["domain"] == domain]
        dom = compute_text_metrics([predictions[i] for i in idx], [references[i] for i in idx])
        dom_ppl, _ = _perplexity([losses[i] for i in idx])
        per_domain[domain] = {"count": len(idx), **{k: float(dom[k]) for k in TEXT_METRIC_KEYS},
                              "perplexity": _number(dom_ppl), "categories": categories_by_domain[domain]}
    timings["scoring_s"] = time.perf_counter() - start

    new_tokens = sum(g.new_tokens for g in generations)
    results = {
        "num_examples": len(rows),
        "metrics": metrics,
        "signatures": {"bleu": corpus["bleu_signature"], "chrf": corpus["chrf_signature"],
                       "rouge": "rouge_score, use_stemmer=True, F-measure, mean over examples; "
                                "rougeLsum on one sentence per line"},
        "generation": {
            "hit_eos": sum(g.hit_eos for g in generations), "ran_on": sum(g.ran_on for g in generations),
            "truncated": sum(g.truncated for g in generations), "prompt_truncated": sum(cut),
            "new_tokens_total": new_tokens, "context_length": limit,
        },
        "per_domain": per_domain,
        "per_category": category_table(rows),
        "category_precedence": list(PRECEDENCE),
        "category_rules": dict(CATEGORY_HELP),
        "lengths": length_stats(rows),
        "worst_examples": worst_examples(rows, settings.num_examples),
        "example_responses": example_responses(rows, settings.num_examples),
        "settings": {**asdict(settings), "decoding": "greedy", "template": formatter.template,
                     "max_seq_length": formatter.max_seq_length,
                     "device": str(next(model.parameters()).device),
                     "dtype": str(next(model.parameters()).dtype).replace("torch.", "")},
        "timings": {**timings,
                    "examples_per_s": len(rows) / timings["generation_s"] if timings["generation_s"] else None,
                    "new_tokens_per_s": new_tokens / timings["generation_s"] if timings["generation_s"] else None},
    }
    return EvalResult(results, rows)


def evaluate_model(model_path: str | Path, data: Sequence[str | Path] | None = None,
                   settings: EvalSettings | None = None, *, progress: bool = False,
                   maps: DataMaps | None = None) -> EvalResult:
    """Evaluate a model folder on ``data`` (default: the validation examples stored in the folder).

    ``maps``: field and role names of ``data`` (theta-train's ``--field-map`` / ``--role-map``, see
    :func:`theta_ai.data.mapping.parse_maps`).
    """
    from theta_ai import __version__

    settings = settings or EvalSettings()
    settings.check()
    started = time.perf_counter()
    folder = check_model_folder(model_path)
    # sample:NAME (the bundled data) as theta-train reads it
    data_paths = resolve_sample_paths([str(p) for p in data], "--data") if data else [str(default_data(folder))]
    examples = load_examples(data_paths, maps=maps or NO_MAPS).examples
    chosen = select_subset(len(examples), settings.max_examples, settings.seed)
    examples = [examples[i] for i in chosen]

    start = time.perf_counter()
    loaded = load_eval_model(folder)
    load_s = time.perf_counter() - start
    result = evaluate_examples(loaded.model, loaded.tokenizer, loaded.formatter, examples, settings, progress=progress)
    result.results = {
        "model_path": str(folder.resolve()), "data": data_paths, "theta_ai_version": __version__,
        "run_info": loaded.run_info, **result.results,
    }
    result.results["timings"] = {"load_s": load_s, **result.results["timings"],
                                 "total_s": time.perf_counter() - started}
    return result


# ---------------------------------------------------------------------------- outputs


def write_outputs(result: EvalResult, output_dir: str | Path) -> dict[str, Path]:
    """Write eval_results.json, predictions.jsonl and eval_report.md; returns their paths by kind."""
    from theta_ai.eval.report import render_markdown

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / RESULTS_FILE, "predictions": out / PREDICTIONS_FILE, "report": out / REPORT_FILE}
    paths["results"].write_text(json.dumps(result.results, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                                encoding="utf-8")
    paths["predictions"].write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in result.predictions),
                                    encoding="utf-8")
    paths["report"].write_text(render_markdown(result, report_dir=out), encoding="utf-8")
    return paths


def _tag(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def log_to_tensorboard(result: EvalResult, logdir: str | Path, step: int | None = None) -> Path:
    """Metrics as scalars (``theta_eval/...``) and tables of examples as text, in ``logdir``.

    ``step`` defaults to the checkpoint's ``global_step`` from ``theta_run.json``, so passing the
    training run's log folder puts the scores on the same axis as its curves.
    """
    from torch.utils.tensorboard import SummaryWriter

    from theta_ai.eval.report import examples_table

    step = step if step is not None else int(result.results.get("run_info", {}).get("global_step", 0))
    writer = SummaryWriter(log_dir=str(logdir))
    try:
        for key, value in result.metrics.items():
            if value is not None:
                writer.add_scalar(f"theta_eval/{key}", value, step)
        for domain, row in result.results["per_domain"].items():
            for key in ("exact_match", "f1", "rougeL", "bleu"):
                writer.add_scalar(f"theta_eval_domain/{_tag(domain)}/{key}", row[key], step)
        for cat, row in result.results["per_category"].items():
            writer.add_scalar(f"theta_eval_category/{cat}", row["count"], step)
        responses = result.results["example_responses"]
        for group in ("best", "median", "worst"):
            if responses[group]:
                writer.add_text(f"theta_eval_examples/{group}", examples_table(responses[group]), step)
    finally:
        writer.close()
    return Path(logdir)
