"""Batched greedy generation (theta-eval) vs one question at a time, on the same theta-tiny model.

    python benchmarks/eval_generation.py                      # train theta-tiny briefly, 200 questions
    python benchmarks/eval_generation.py --model-path models/quickstart/theta_best --questions 200
    python benchmarks/eval_generation.py --batch-size 64 --max-new-tokens 48 --threads 2

Without --model-path it writes a seeded synthetic question/answer set (fictional countries, capitals,
populations; answers of 10-20 words), trains theta-tiny on it for a few epochs on the CPU (a trained
model stops at EOS, as a real one does), then answers the same questions twice with
:func:`theta_ai.eval.generation.generate_answers`: once in batches of --batch-size (left padding, KV cache)
and once with batch size 1. It checks that the greedy answers are identical and prints both times
and the speed ratio. Everything is offline.

Batched and single decoding agree token for token except at exact near-ties: a padded batch runs
the same arithmetic in a different order, so when the two best next tokens have logits equal to
~1e-6 float rounding picks one or the other. Any disagreement is checked with a single-row forward
and reported; the exit status is 1 only for a disagreement that is not such a tie.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

#: Two greedy runs may only disagree where the top two logits are equal up to float32 rounding.
TIE_TOLERANCE = 1e-4
SYLLABLES = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "dor", "an", "is", "ur", "po", "qua", "zen", "bri", "ta"]


def synthetic_records(n: int, seed: int) -> list[dict]:
    """``n`` distinct question/answer records in three domains (deterministic for a seed)."""
    rng = random.Random(seed)
    records, seen = [], set()
    while len(records) < n:
        country = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize() + "ia"
        if country in seen:
            continue
        seen.add(country)
        city = "".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize()
        kind = len(records) % 3
        if kind == 0:
            records.append({"question": f"What is the capital of {country}?", "domain": "geography",
                            "answer": f"The capital of {country} is {city}, its largest city and main port."})
        elif kind == 1:
            people = rng.randint(2, 90)
            records.append({"question": f"How many people live in {country}?", "domain": "demography",
                            "answer": f"About {people} million people live in {country}, most of them near {city}."})
        else:
            records.append({"question": f"What language is spoken in {country}?", "domain": "language",
                            "answer": f"People in {country} speak {city}ish, a language related to the old "
                                      f"tongue of the northern valleys."})
    return records


def train_model(workdir: Path, records: list[dict], epochs: float, seed: int) -> Path:
    from theta_ai import resolve_config, train

    data = workdir / "bench_train.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    cfg = resolve_config({
        "data": [str(data)], "model_name": "theta-tiny", "epochs": epochs, "batch_size": 16, "grad_accum": 1,
        "learning_rate": 3e-3, "warmup_steps": 20, "max_seq_length": 128, "seed": seed, "val_split": 0.05,
        "checkpoint_dir": str(workdir / "models"), "logdir": str(workdir / "logs"), "save_total_limit": 1,
        "training_args": {"disable_tqdm": True},
    }, preset="rtx3060")
    return train(cfg).final_dir


def tie_gap(model, prompt: list[int], a: list[int], b: list[int]) -> float:
    """|logit(a_k) - logit(b_k)| at the first token where two greedy answers differ, from a single-row forward."""
    import torch

    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if k >= len(a) or k >= len(b):  # one answer stops where the other goes on: compare with EOS
        return float("inf")
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + a[:k]])).logits[0, -1]
    return abs(float(logits[a[k]] - logits[b[k]]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", help="an existing model folder (default: train theta-tiny here)")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--epochs", type=float, default=12.0, help="training epochs when no --model-path is given")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3, help="time each mode this many times, keep the fastest")
    parser.add_argument("--workdir", help="keep the data and model here (default: a temporary folder)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from theta_ai.data import Example
    from theta_ai.eval.runner import load_eval_model
    from theta_ai.eval.generation import generate_answers

    if args.threads:
        torch.set_num_threads(args.threads)
    records = synthetic_records(max(args.questions, 300), args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        model_path = Path(args.model_path) if args.model_path else train_model(workdir, records, args.epochs, args.seed)
        train_s = time.perf_counter() - start
        loaded = load_eval_model(model_path, device="cpu")
        questions = [Example.from_qa(r["question"], r["answer"], r["domain"]) for r in records[: args.questions]]
        prompts = [loaded.formatter.prompt_ids(e.messages) for e in questions]

        def run(batch_size: int):
            best = float("inf")
            for _ in range(args.repeats):  # the fastest of a few runs: other load on the machine only adds time
                start = time.perf_counter()
                out = generate_answers(loaded.model, loaded.tokenizer, prompts, batch_size=batch_size,
                                       max_new_tokens=args.max_new_tokens)
                best = min(best, time.perf_counter() - start)
            return out, best

        generate_answers(loaded.model, loaded.tokenizer, prompts[:4], batch_size=2, max_new_tokens=4)  # warm-up
        batched, batched_s = run(args.batch_size)
        single, single_s = run(1)

        same = [b.token_ids == s.token_ids and b.hit_eos == s.hit_eos for b, s in zip(batched, single)]
        gaps = [tie_gap(loaded.model, prompts[i], batched[i].token_ids, single[i].token_ids)
                for i, ok in enumerate(same) if not ok]
    tokens = sum(g.new_tokens for g in single)
    print(f"model: {model_path if args.model_path else f'theta-tiny trained {args.epochs:g} epochs ({train_s:.0f} s)'}"
          f"; {args.questions} questions, max {args.max_new_tokens} new tokens, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), device cpu, best of {args.repeats} runs")
    print(f"answers: {sum(g.hit_eos for g in single)} stopped at EOS, {sum(g.truncated for g in single)} hit the "
          f"limit, {tokens} new tokens in all; e.g. {questions[0].question!r} -> {single[0].text!r}")
    print(f"{'mode':<24} {'seconds':>8} {'questions/s':>12} {'tokens/s':>9}")
    print(f"{f'batched (batch {args.batch_size})':<24} {batched_s:>8.2f} {args.questions / batched_s:>12.1f} "
          f"{tokens / batched_s:>9.0f}")
    print(f"{'one at a time':<24} {single_s:>8.2f} {args.questions / single_s:>12.1f} {tokens / single_s:>9.0f}")
    print(f"speed-up: {single_s / batched_s:.1f}x; identical greedy answers: {sum(same)}/{len(same)}")
    for i, gap in zip([i for i, ok in enumerate(same) if not ok], gaps):
        print(f"  #{i} differs at a near-tie: the two candidate tokens' logits differ by {gap:.1e} "
              f"(float rounding of a padded batch decides)" if gap < TIE_TOLERANCE else
              f"  #{i} differs and it is NOT a tie (logit gap {gap:.3g}): batched generation is wrong")
    return 0 if all(g < TIE_TOLERANCE for g in gaps) else 1


if __name__ == "__main__":
    sys.exit(main())
