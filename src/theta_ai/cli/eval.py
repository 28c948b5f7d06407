"""theta-eval: generate answers with a trained model and score them, fully offline.

    theta-eval --model-path models/theta_best
    theta-eval --model-path models/theta_checkpoint_epoch_3 --data data/test.jsonl --max-new-tokens 64
    theta-eval --model-path models/theta_final --logdir logs/rtx3060-20250101-120000

Writes eval_results.json, predictions.jsonl and eval_report.md into --output (default
``<model folder>/eval/``) and prints a summary. Only argument parsing lives here; the work is
:mod:`theta_ai.eval.runner`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from theta_ai.cli.common import (
    configure_console, non_negative_int, parse_strictly, positive_int, run_guarded, setup_logging,
)

PROG = "theta-eval"


def build_parser() -> argparse.ArgumentParser:
    from theta_ai.eval.runner import EVAL_DIR, EvalSettings

    d = EvalSettings()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate answers greedily with a theta-train checkpoint (or any causal LM folder), score them "
                    "(exact match, F1, answer recall, ROUGE, BLEU, chrF, answer perplexity), sort the errors into "
                    "categories and write a report. Never uses the network.",
        epilog="Examples:\n  theta-eval --model-path models/theta_best\n"
               "  theta-eval --model-path models/theta_final --data data/test.jsonl --max-new-tokens 64\n"
               "  theta-eval --model-path models/theta_best --logdir logs/<training run folder>",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-path", required=True, metavar="PATH",
                        help="model folder: theta_checkpoint_epoch_N, theta_best, theta_final, or any save_pretrained "
                             "causal LM folder, or a .gguf file (zero-shot, dequantized; needs theta_ai[gguf])")
    parser.add_argument("--data", nargs="+", action="extend", metavar="FILE",
                        help="examples to evaluate, in any format theta-train reads (repeatable); default: the "
                             "validation examples stored in the model folder (theta_validation.jsonl)")
    parser.add_argument("--field-map", metavar="THETA=FILE,...",
                        help="read --data's fields under other names, as theta-train's --field-map "
                             "(question=prompt,answer=response, conversations=exchanges, ...)")
    parser.add_argument("--role-map", metavar="FILE=THETA,...",
                        help="read other role names in --data, as theta-train's --role-map (bot=assistant, ...)")
    parser.add_argument("--output", metavar="DIR",
                        help=f"where the results go (default: <model folder>/{EVAL_DIR}/; for x.gguf: x_{EVAL_DIR}/ "
                             "next to it)")
    parser.add_argument("--batch-size", type=positive_int, default=d.batch_size, metavar="N",
                        help=f"prompts generated together (default: {d.batch_size})")
    parser.add_argument("--max-new-tokens", type=positive_int, default=d.max_new_tokens, metavar="N",
                        help=f"longest answer in tokens; longer ones count as truncated (default: {d.max_new_tokens})")
    parser.add_argument("--num-examples", type=non_negative_int, default=d.num_examples, metavar="N",
                        help=f"examples shown in each list of the report: worst, best, median (default: {d.num_examples})")
    parser.add_argument("--max-examples", type=positive_int, default=None, metavar="N",
                        help="evaluate only N examples drawn with --seed (default: all)")
    parser.add_argument("--seed", type=int, default=d.seed, metavar="N",
                        help=f"seed for --max-examples and torch (default: {d.seed})")
    parser.add_argument("--logdir", metavar="DIR",
                        help="also write the metrics as TensorBoard scalars and example tables into DIR (e.g. the "
                             "training run's log folder)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show library progress bars (Loading weights) and the library messages theta-eval "
                             "hides as harmless")
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    return parse_strictly(build_parser(), argv, PROG)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # theta-eval only reads local folders: make any accidental hub lookup fail fast instead of waiting on the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")

    def body() -> int:
        from theta_ai.eval.runner import (EVAL_DIR, EvalSettings, check_model_folder, evaluate_model,
                                          log_to_tensorboard, write_outputs)

        logger = setup_logging()
        check_model_folder(args.model_path)  # a wrong path is reported before any library loads
        configure_console(args.verbose)
        from theta_ai.eval.report import summary_lines, training_plot  # (monitoring/ imports transformers)
        settings = EvalSettings(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                num_examples=args.num_examples, seed=args.seed, max_examples=args.max_examples)
        from theta_ai.data.mapping import parse_maps

        result = evaluate_model(args.model_path, args.data, settings, progress=True,
                                maps=parse_maps(args.field_map, args.role_map))
        model_path = Path(args.model_path)  # a .gguf file has no folder of its own: <name>_eval/ next to it
        output = Path(args.output) if args.output else (model_path.with_name(f"{model_path.stem}_{EVAL_DIR}")
                                                        if model_path.is_file() else model_path / EVAL_DIR)
        paths = write_outputs(result, output)
        if args.logdir:
            logger.info("TensorBoard: %s (tensorboard --logdir=%s)", log_to_tensorboard(result, args.logdir),
                        args.logdir)
        for line in summary_lines(result):
            print(line)
        print(f"wrote {paths['results']}, {paths['predictions'].name}, {paths['report'].name}")
        plot = training_plot(result.results)
        if plot is not None:
            print(f"training curves of this model: {plot}")
        return 0

    return run_guarded(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
