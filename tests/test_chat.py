"""theta-chat: a real subprocess with piped stdin on a theta-tiny model (qa template) and on a tiny Llama with a
ChatML template, each trained here to know a two-turn conversation by heart (--prompt and the second usage error
through theta-chat's main() in this process); the session library underneath."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_main
from theta_fixtures import build_tiny_llama

from theta_ai.data import Example, ExampleFormatter, PaddingCollator

BIN = Path(sys.executable).parent
Q1, A1 = "What is the capital of France?", "The capital of France is Paris."
Q2, A2 = "And of Spain?", "The capital of Spain is Madrid."
Q3, A3 = "What is two plus two?", "Two plus two is four."
CONVERSATION = [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1},
                {"role": "user", "content": Q2}, {"role": "assistant", "content": A2}]
EXAMPLES = [Example.from_qa(Q1, A1), Example.from_qa(Q3, A3), Example(CONVERSATION)]


def memorise(model, formatter: ExampleFormatter, examples, steps: int = 300) -> float:
    """Train ``model`` on ``examples`` until it knows them (plain AdamW, full batch); returns the last loss."""
    import torch

    from theta_ai.model.load import set_dropout

    set_dropout(model, 0.0)
    rows = [formatter.encode(e) for e in examples]
    batch = PaddingCollator(pad_token_id=formatter.tokenizer.pad_token_id)(
        [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < 0.005:
            break
    model.eval()
    return loss.item()


def _texts():
    return [m["content"] for e in EXAMPLES for m in e.messages] * 4 + ["Question: \nAnswer: "]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two model folders that know EXAMPLES: theta-tiny (qa template) and a tiny ChatML Llama."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from theta_ai.model.load import build_theta_tiny

    root = tmp_path_factory.mktemp("chat")
    tiny = build_theta_tiny(_texts())
    tiny.model.config.n_positions = 512
    assert memorise(tiny.model, ExampleFormatter(tiny.tokenizer, "qa"), EXAMPLES) < 0.05
    tiny.model.save_pretrained(root / "tiny")
    tiny.tokenizer.save_pretrained(root / "tiny")

    llama_dir = build_tiny_llama(root / "llama", _texts() + ["<|im_start|>user\n<|im_start|>assistant\n"])
    model, tok = AutoModelForCausalLM.from_pretrained(llama_dir), AutoTokenizer.from_pretrained(llama_dir)
    assert memorise(model, ExampleFormatter(tok), EXAMPLES) < 0.05
    model.save_pretrained(llama_dir)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")

    def chat(folder: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "theta-chat"), "--model-path", str(root / folder), *args], input=stdin,
                              capture_output=True, text=True, timeout=120, env=env, cwd=root)

    def chat_main(folder: str, *args: str, capsys) -> subprocess.CompletedProcess:
        """theta-chat's main() in this process, as ``chat`` runs it (no stdin)."""
        from theta_ai.cli.chat import main

        return run_main(main, "--model-path", str(root / folder), *args, capsys=capsys, cwd=root,
                        env={"HF_HUB_OFFLINE": "1"})

    return type("Models", (), {"root": root, "chat": staticmethod(chat), "main": staticmethod(chat_main)})


@pytest.mark.parametrize("folder", ["tiny", "llama"])
def test_a_piped_conversation_answers_each_turn_with_the_history_and_resets(models, folder):
    result = models.chat(folder, "--max-new-tokens", "24", stdin=f"{Q1}\n{Q2}\n/reset\n\n/nope\n{Q3}\n/exit\nignored\n")
    assert result.returncode == 0, result.stderr[-2000:]
    # The second answer needs the first turn (alone, "And of Spain?" was never trained); after /reset a new one.
    assert result.stdout.splitlines() == [f"theta> {A1}", f"theta> {A2}", f"theta> {A3}"]
    assert "[theta] new conversation" in result.stderr
    assert "unknown command /nope" in result.stderr and "Traceback" not in result.stderr
    template = "qa" if folder == "tiny" else "chat"
    assert f"(template {template}, greedy)" in result.stderr


@pytest.mark.parametrize("folder", ["tiny", "llama"])
def test_prompt_answers_once_for_scripts(models, folder, capsys):
    result = models.main(folder, "--prompt", Q3, "--max-new-tokens", "24", capsys=capsys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == f"{A3}\n"


def test_usage_errors_are_one_line(models, capsys):
    bad = models.chat("missing")  # the real command
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("theta-chat: error: --model-path")
    hot = models.main("tiny", "--temperature", "-1", "--prompt", "x", capsys=capsys)
    assert hot.returncode == 1 and "--temperature must not be negative" in hot.stderr
    assert "Traceback" not in bad.stderr + hot.stderr


# -------------------------------------------------------------------------------------------- the library


def _session(models, folder: str, **settings):
    from theta_ai.eval.chat import ChatSession, ChatSettings
    from theta_ai.eval.runner import load_eval_model

    loaded = load_eval_model(models.root / folder, device="cpu")
    return ChatSession(loaded.model, loaded.tokenizer, loaded.formatter, ChatSettings(**settings))


def test_the_chat_prompt_is_the_training_prompt_and_answers_match_theta_eval(models):
    from theta_ai.eval.generation import generate_answers

    session = _session(models, "llama", system="Be brief.", max_new_tokens=24)
    ids, notes = session.prompt_for(Q1)
    assert notes == [] and ids == session.formatter.prompt_ids([{"role": "system", "content": "Be brief."},
                                                                 {"role": "user", "content": Q1}])
    reply = session.reply(Q1)
    [expected] = generate_answers(session.model, session.tokenizer, [ids], max_new_tokens=24)
    assert reply.text == expected.text and reply.hit_eos == expected.hit_eos
    assert session.history == [{"role": "user", "content": Q1}, {"role": "assistant", "content": reply.text}]


def test_ctrl_c_ends_the_answer_not_the_session(models):
    session = _session(models, "tiny", max_new_tokens=24)
    pieces = []

    def interrupt_after_two(text):
        pieces.append(text)
        if len(pieces) == 2:
            raise KeyboardInterrupt

    stopped = session.reply(Q1, on_text=interrupt_after_two)
    assert stopped.interrupted and not stopped.hit_eos and A1.startswith(stopped.text) and stopped.text != A1
    assert session.history[-1] == {"role": "assistant", "content": stopped.text}
    session.reset()
    assert session.reply(Q1).text == A1


def test_a_long_conversation_drops_its_oldest_turns_to_fit_the_context(models):
    session = _session(models, "tiny", max_new_tokens=400)  # theta-tiny's context is 512: ~100 tokens of prompt
    for i in range(6):
        session.history += [{"role": "user", "content": f"{Q1} {i}"}, {"role": "assistant", "content": A1 * 2}]
    ids, notes = session.prompt_for(Q3)
    assert len(ids) <= 512 - 400 and len(notes) == 1
    assert notes[0].startswith("the oldest ") and "context of 512 tokens with --max-new-tokens 400" in notes[0]
    assert session.tokenizer.decode(ids).endswith(f"Question: {Q3}\nAnswer:")


def test_a_qa_answer_that_runs_on_into_a_new_turn_is_cut_before_it_is_shown(qa_tokenizer):
    import torch

    from theta_ai.eval.chat import _AnswerStream

    shown = []
    stream = _AnswerStream(qa_tokenizer, {qa_tokenizer.eos_token_id}, shown.append, cut_turns=True)
    stream.put(torch.tensor([[1, 2, 3]]))  # the prompt comes first
    for token in qa_tokenizer(" Paris is nice.\nQuestion: What next?", add_special_tokens=False)["input_ids"]:
        stream.put(torch.tensor([token]))
    stream.end()
    assert "".join(shown) == "Paris is nice." and stream.ran_on and "Q" not in "".join(shown)
