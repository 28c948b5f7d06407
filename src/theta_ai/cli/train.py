"""theta-train: fine-tune a causal LM on question/answer and conversation data.

One GPU (or CPU)::

    theta-train --preset cpu-quickstart
    theta-train --data my_data/ --model-name gpt2 --epochs 100 --batch-size 4 --grad-accum 4

Several GPUs (rank and world size come from the launcher)::

    torchrun --nproc_per_node 2 -m theta_ai.cli.train --data my_data/
    accelerate launch --multi_gpu --num_processes 2 -m theta_ai.cli.train --data my_data/
    python -m torch.distributed.launch --nproc_per_node=2 -m theta_ai.cli.train --data my_data/ --distributed

Only argument parsing lives here; the work is :mod:`theta_ai.training.run`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from theta_ai.config.options import OPTIONS, Option, _bool
from theta_ai.config.presets import DEFAULT_PRESET, PRESETS
from theta_ai.cli.common import attach_log_file, configure_console, parse_strictly, run_guarded, setup_logging

# Conventional shell codes for "stopped by a signal"; the overnight scripts do not restart on them.
STOP_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}

GROUP_TITLES = {
    "data": "data and formatting",
    "model": "model",
    "training": "training (defaults: the rtx3060 preset)",
    "enhanced": "enhanced training (augmentation, schedules, regularization, early stopping, spike guard)",
    "checkpoints": "checkpoints, fine-tuning and resuming",
    "run": "logging and run control",
}


def _add_option(group: argparse._ArgumentGroup, option: Option) -> None:
    default = option.default if not option.repeatable else None
    shown = f" (default: {default})" if default not in (None, [], False) else ""
    # argparse %-formats help strings: a literal "%" in a description must reach it as "%%"
    kwargs = dict(dest=option.name, default=argparse.SUPPRESS, help=(option.help + shown).replace("%", "%%"))
    if option.type is _bool:
        group.add_argument(option.cli_flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif option.repeatable:
        group.add_argument(option.cli_flag, action="append", metavar=option.metavar or "PATH", **kwargs)
    elif option.name == "resume":
        group.add_argument(option.cli_flag, nargs="?", const="auto", metavar=option.metavar, **kwargs)
    else:
        group.add_argument(option.cli_flag, type=option.type, choices=option.choices,
                           metavar=option.metavar or (None if option.choices else option.name.upper()), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="theta-train",
        description="Fine-tune a small conversational QA model (loss on answers only) with RTX 3060 presets. "
                    "Settings combine as: preset, then --config FILE.yaml, then flags.",
        epilog="Examples:\n  theta-train --preset cpu-quickstart\n"
               "  theta-train --data data/ --model-name gpt2 --epochs 100 --batch-size 4 --grad-accum 4\n"
               "  theta-train --data data/ --resume auto\n"
               "  theta-train --data data/ --epochs 20 --load-checkpoint models/theta_checkpoint_epoch_26",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=list(PRESETS), default=argparse.SUPPRESS,
                        help=f"named settings (default: {DEFAULT_PRESET})")
    parser.add_argument("--config", metavar="FILE.yaml", default=argparse.SUPPRESS,
                        help="YAML file of option values (same names as the flags)")
    export = parser.add_argument_group("export (instead of training)")
    export.add_argument("--merge-lora", metavar="ADAPTER_DIR", default=argparse.SUPPRESS,
                        help="merge a LoRA checkpoint into its base model and write a plain transformers model to --output")
    export.add_argument("--output", metavar="DIR", default=argparse.SUPPRESS, help="where --merge-lora writes the model")
    # torch.distributed.launch (without --use-env) appends --local-rank=N; the rank is read from the
    # environment (RANK, LOCAL_RANK) as under torchrun, so the flag is accepted and ignored.
    parser.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    groups = {name: parser.add_argument_group(title) for name, title in GROUP_TITLES.items()}
    for option in OPTIONS:
        _add_option(groups[option.group], option)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    return parse_strictly(build_parser(), argv, "theta-train")


def merge_command(adapter_dir: str, output: str | None) -> int:
    from theta_ai.config import ConfigError
    from theta_ai.model.merge import merge_adapter

    if not output:
        raise ConfigError("--merge-lora needs --output DIR for the merged model")
    notes: list[str] = []
    try:
        path = merge_adapter(adapter_dir, output, notes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for note in notes:
        setup_logging().info("%s", note)
    setup_logging().info("merged %s into its base model: %s (loads with AutoModelForCausalLM.from_pretrained)",
                         adapter_dir, path)
    return 0


def main(argv: list[str] | None = None) -> int:
    namespace = parse(argv)
    values = vars(namespace)
    preset = values.pop("preset", None)
    config_file = values.pop("config", None)
    values.pop("local_rank", None)
    merge_from, merge_to = values.pop("merge_lora", None), values.pop("output", None)
    if merge_from is not None:
        verbose = bool(values.get("verbose"))

        def merge() -> int:
            configure_console(verbose)  # the same quiet console as training: no library bars, no harmless notes
            return merge_command(merge_from, merge_to)

        return run_guarded("theta-train", merge)

    def body() -> int:
        from theta_ai.config import resolve_config
        from theta_ai.config.launch import is_main_process
        from theta_ai.training.inputs import read_run_inputs

        logger = setup_logging()
        if not is_main_process():
            logger.setLevel(logging.WARNING)  # rank 0 prints the banner and progress lines, once
        cfg = resolve_config(values, preset=preset, config_file=config_file)
        if cfg.plan:
            from theta_ai.planner import plan_report

            configure_console(cfg.verbose)
            print("\n".join(plan_report(cfg, cfg.gpu_memory)))
            return 0
        # The data is read and checked before torch and transformers are imported (10-25 s on a small machine),
        # so a mistake in a path or a record is reported at once.
        inputs = read_run_inputs(cfg)
        configure_console(cfg.verbose)
        from theta_ai.training.dry_run import dry_run_report
        from theta_ai.training.run import prepare_run, train

        run = prepare_run(cfg, inputs)
        if not cfg.dry_run and is_main_process():  # another rank would open a second logs/<run> folder
            attach_log_file(run.log_dir / "train.log")
        for note in run.notes:
            logger.warning(note)
        for line in run.banner():
            logger.info(line)
        if cfg.dry_run:
            for line in dry_run_report(run):
                print(line)
            return 0
        result = train(cfg, prepared=run)
        if result.stopped_by:
            logger.warning("stopped by %s after saving %s; continue with --resume auto", result.stopped_by,
                           result.last_checkpoint)
            return STOP_EXIT_CODES.get(result.stopped_by, 1)
        logger.info("done: %d epoch checkpoint(s) in %s, best model %s, final model %s",
                    len(result.checkpoints), result.checkpoint_dir, result.best_dir, result.final_dir)
        return 0

    return run_guarded("theta-train", body)


if __name__ == "__main__":
    sys.exit(main())
