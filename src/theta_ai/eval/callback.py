"""GenerationEvalCallback: generation metrics (ROUGE-L, BLEU, exact match...) at every Trainer evaluation.

Hook it into a Trainer like any callback; it uses the same generation and metric code as theta-eval::

    from theta_ai.eval.callback import GenerationEvalCallback
    trainer = ThetaTrainer(..., callbacks=[GenerationEvalCallback(run.val_examples, run.formatter), ...])
"""

from __future__ import annotations

from typing import Sequence

from transformers import TrainerCallback

from theta_ai.data import Example, ExampleFormatter
from theta_ai.eval.generation import (DEFAULT_MAX_NEW_TOKENS, context_length, fit_prompts, generate_answers,
                                      select_subset)
from theta_ai.metrics import TEXT_METRIC_KEYS, compute_text_metrics


class GenerationEvalCallback(TrainerCallback):
    """On every evaluation, answer a fixed seeded subset of the validation examples and add text metrics.

    The scores (default ``rougeL``, ``bleu``, ``exact_match``, ``f1``) are added to the evaluation's
    metrics dict with its prefix (``eval_rougeL``, ...) before Trainer picks the best checkpoint, so
    ``metric_for_best_model="eval_rougeL"`` (with ``greater_is_better=True``) works. They are also
    written into the evaluation's ``state.log_history`` entry (hence ``trainer_state.json``) and, when a
    ``tb_writer`` is given, as TensorBoard scalars ``eval/rougeL``...: Trainer logs an evaluation
    *before* callbacks see it, so its own TensorBoard callback never sees these keys.

    Put it **before** any callback that reads the metrics in ``on_evaluate`` (callbacks run in list order)::

        callbacks = [GenerationEvalCallback(run.val_examples, run.formatter, num_examples=32),
                     BestModelCallback(...), ...]

    Every process generates the same subset (deterministic), so all ranks agree on the best model.
    """

    def __init__(self, examples: Sequence[Example], formatter: ExampleFormatter, *, num_examples: int = 32,
                 seed: int = 42, batch_size: int = 16, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 metrics: Sequence[str] = ("rougeL", "bleu", "exact_match", "f1"), tb_writer=None):
        unknown = [m for m in metrics if m not in TEXT_METRIC_KEYS]
        if unknown:
            raise ValueError(f"unknown generation metric(s) {unknown}; choose from {', '.join(TEXT_METRIC_KEYS)}")
        chosen = select_subset(len(examples), num_examples, seed)
        self.examples = [examples[i] for i in chosen]
        self.formatter = formatter
        self.prompts = [formatter.prompt_ids(e.messages) for e in self.examples]
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.metrics = tuple(metrics)
        self.tb_writer = tb_writer
        self.last_predictions: list[str] = []

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if model is None or metrics is None or not self.examples:
            return
        limit = context_length(model)
        prompts, _ = fit_prompts(self.prompts, None if limit is None else max(1, limit - self.max_new_tokens))
        generations = generate_answers(model, self.formatter.tokenizer, prompts, batch_size=self.batch_size,
                                       max_new_tokens=self.max_new_tokens)
        self.last_predictions = [g.text for g in generations]
        scores = compute_text_metrics(self.last_predictions, [e.answer for e in self.examples])
        prefix = next((key[: -len("loss")] for key in metrics if key.endswith("_loss")), "eval_")
        added = {f"{prefix}{name}": float(scores[name]) for name in self.metrics}
        metrics.update(added)
        last = state.log_history[-1] if state.log_history else None
        if last is not None and last.get("step") == state.global_step and f"{prefix}loss" in last:
            last.update(added)
        if self.tb_writer is not None and state.is_world_process_zero:
            for key, value in added.items():
                self.tb_writer.add_scalar(key.replace("_", "/", 1), value, state.global_step)
            self.tb_writer.flush()
