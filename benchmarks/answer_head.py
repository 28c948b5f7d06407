"""The answer-token LM head against whole-logits trimming, one training step (forward + backward) side by side.

    OMP_NUM_THREADS=1 python benchmarks/answer_head.py            # GPT-2 4 x 256 (the throughput config), 2 batches
    python benchmarks/answer_head.py --repeats 10 --vocab 151669  # a Qwen-sized vocabulary

What it compares, on the same model and the same batch, alternating (A B A B ...), best of ``--repeats``:

* ``trimmed``: ThetaTrainer's path before the answer-token head, still used where its start-up proof fails and in
  evaluation: the LM head on every column from the first one that predicts an answer token in *some* row of the
  batch (``logits_to_keep``), the other rows' prompt and padding positions included.
* ``answer head``: the LM head and the loss on the positions that predict an answer token only (the collator's
  CPU marks; ``theta_ai.training.loss.answer_cross_entropy``).

Two batches of 4 rows: ``short prompts`` (prompts 12-20 tokens, answers 60-75: the bundled data through the ``qa``
template, answers ~82% of the tokens) and ``chat prompts`` (prompts 38-45 tokens, answers 20-80: a chat template
with a system prompt, as SmolLM2's default one). Prints the step times, their ratio and the two losses (equal to
rounding: the same loss by construction).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

BATCHES = {"short prompts": ((14, 70), (18, 66), (12, 75), (20, 60)),
           "chat prompts": ((40, 20), (45, 80), (38, 50), (42, 30))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=50257)
    args = parser.parse_args()

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

    from theta_ai.data import MarkedCollator, PaddingCollator
    from theta_ai.training.trainer import ThetaTrainer

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=args.vocab, resid_pdrop=0,
                                       embd_pdrop=0, attn_pdrop=0))
    model.train()
    trainer = ThetaTrainer(model=model, args=TrainingArguments(output_dir=tempfile.mkdtemp(), report_to="none"))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    print(f"{cpu}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), vocabulary {args.vocab:,}, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| batch | positions trimmed / answer | trimmed s | answer head s | speed-up | losses |")
    print("|---|---|---:|---:|---:|---|")
    generator = torch.Generator().manual_seed(0)
    for name, shapes in BATCHES.items():
        rows = []
        for prompt, answer in shapes:
            ids = torch.randint(1, args.vocab, (prompt + answer,), generator=generator).tolist()
            rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
        batch = MarkedCollator(PaddingCollator(pad_token_id=0))(rows)

        def step(answer_head: bool) -> tuple[float, float]:
            trainer.answer_head = answer_head
            model.zero_grad()
            start = time.perf_counter()
            loss = trainer.compute_loss(model, dict(batch))
            loss.backward()
            return time.perf_counter() - start, loss.item()

        step(False), step(True)  # warm-up
        times: dict[bool, list[float]] = {False: [], True: []}
        losses = {}
        for _ in range(args.repeats):
            for answer_head in (False, True):
                seconds, losses[answer_head] = step(answer_head)
                times[answer_head].append(seconds)
        trimmed, answer = min(times[False]), min(times[True])
        positions = batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - batch["theta_answer_start"])
        print(f"| {name} | {positions} / {len(batch['theta_answer_targets'])} | {trimmed:.3f} | {answer:.3f} | "
              f"{trimmed / answer:.2f}x | {losses[False]:.6f} / {losses[True]:.6f} |")


if __name__ == "__main__":
    main()
