"""theta-chat: talk to a trained model in the terminal, fully offline.

    theta-chat --model-path models/theta_best
    theta-chat --model-path models/theta_best --system "Answer in one sentence." --temperature 0.7
    theta-chat --model-path models/theta_final --prompt "What is DNS?"     # answer once, for scripts

Only argument parsing and the terminal loop live here; the conversation is :mod:`theta_ai.eval.chat`.
"""

from __future__ import annotations

import argparse
import os
import sys

from theta_ai.cli.common import configure_console, parse_strictly, positive_int, run_guarded, setup_logging

PROG = "theta-chat"
COMMANDS = "/reset starts a new conversation, /exit quits (or Ctrl+D); Ctrl+C stops an answer"


def build_parser() -> argparse.ArgumentParser:
    from theta_ai.eval.chat import ChatSettings

    d = ChatSettings()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Chat with a theta-train checkpoint (or any causal LM folder or .gguf file): multi-turn, "
                    "through the template training used, answers streamed as they are generated, greedy unless "
                    f"--temperature is set. In the chat: {COMMANDS}.",
        epilog="Examples:\n  theta-chat --model-path models/theta_best\n"
               "  theta-chat --model-path models/theta_best --prompt \"What is DNS?\"",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-path", required=True, metavar="PATH",
                        help="theta_checkpoint_epoch_N, theta_best, theta_final, a LoRA adapter folder, any "
                             "save_pretrained causal LM folder, or a .gguf file")
    parser.add_argument("--system", metavar="TEXT", help="a system message that opens every conversation")
    parser.add_argument("--max-new-tokens", type=positive_int, default=d.max_new_tokens, metavar="N",
                        help=f"longest answer in tokens (default: {d.max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=d.temperature, metavar="T",
                        help="sample with this temperature; 0 = greedy, the same answer every time (default: 0)")
    parser.add_argument("--top-p", type=float, default=d.top_p, metavar="P",
                        help=f"nucleus sampling: keep the smallest set of tokens with this much probability "
                             f"(with --temperature; default: {d.top_p:g})")
    parser.add_argument("--seed", type=int, default=d.seed, metavar="N", help=f"seed for sampling (default: {d.seed})")
    parser.add_argument("--prompt", metavar="TEXT", help="answer this one question and exit")
    return parser


def _say(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _answer(session, question: str, prefix: str, logger) -> None:
    _say(prefix)
    reply = session.reply(question, on_text=_say)
    _say("\n")
    for note in reply.notes:
        logger.warning(note)
    if reply.interrupted:
        logger.info("answer stopped (Ctrl+C); it stays in the conversation")
    elif reply.truncated:
        logger.info("the answer reached --max-new-tokens %d; raise it for longer answers",
                    session.settings.max_new_tokens)


def _loop(session, logger, interactive: bool) -> int:
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            return 0
        except KeyboardInterrupt:
            _say("\n")
            logger.info(COMMANDS)
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            session.reset()
            logger.info("new conversation")
            continue
        if text.startswith("/"):
            logger.warning("unknown command %s; %s", text.split()[0], COMMANDS)
            continue
        _answer(session, text, "theta> ", logger)


def main(argv: list[str] | None = None) -> int:
    args = parse_strictly(build_parser(), argv, PROG)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: fail fast instead of waiting on the network

    def body() -> int:
        from theta_ai.eval.chat import ChatSession, ChatSettings
        from theta_ai.eval.runner import check_model_folder, load_eval_model

        logger = setup_logging()
        check_model_folder(args.model_path)  # a wrong path is reported before any library loads
        configure_console()  # no "Loading weights" bar or known-harmless library messages before the conversation
        settings = ChatSettings(system=args.system, max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature, top_p=args.top_p, seed=args.seed)
        settings.check()
        loaded = load_eval_model(args.model_path)
        session = ChatSession(loaded.model, loaded.tokenizer, loaded.formatter, settings)
        if args.prompt is not None:
            _answer(session, args.prompt, "", logger)
            return 0
        interactive = sys.stdin.isatty()
        logger.info("chatting with %s (template %s, %s); %s", args.model_path, loaded.formatter.template,
                    "greedy" if settings.temperature == 0 else f"temperature {settings.temperature:g}", COMMANDS)
        return _loop(session, logger, interactive)

    return run_guarded(PROG, body)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
