"""One plain console / train.log line per evaluation.
"""

from __future__ import annotations

import logging
import math

from transformers import TrainerCallback

logger = logging.getLogger("theta_ai")


class EpochSummaryCallback(TrainerCallback):
    """One plain line per evaluation (epoch, losses, perplexity) for the console and the run log.

    ``generation_examples``: how many validation questions the generation-eval callback answers, named in
    the line (``ROUGE-L on 8 answers``): a fixed subset scores differently from theta-eval's whole set.
    """

    def __init__(self, generation_examples: int | None = None):
        self.last_train_loss: float | None = None
        self.rouge_label = f"ROUGE-L on {generation_examples} answers" if generation_examples else "ROUGE-L"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_train_loss = logs["loss"]

    @staticmethod
    def _is_new_best(args, state, metrics) -> bool:
        """Trainer's own test, made before Trainer makes it at the save that follows this evaluation."""
        key = args.metric_for_best_model
        if not key:
            return False
        value = metrics.get(key if key.startswith("eval_") else f"eval_{key}")
        if value is None:
            return False
        if state.best_metric is None:
            return True
        return value > state.best_metric if args.greater_is_better else value < state.best_metric

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        loss = metrics.get("eval_loss")
        ppl = math.exp(loss) if loss is not None and loss < 50 else float("inf")
        train = f"{self.last_train_loss:.4f}" if self.last_train_loss is not None else "-"
        extra = "".join(f", {name} {metrics[key]:.4f}" for key, name in (
            ("eval_token_accuracy", "answer-token accuracy"), ("eval_rougeL", self.rouge_label)) if key in metrics)
        if self._is_new_best(args, state, metrics):  # theta_best is replaced by this epoch's checkpoint
            extra += ", new best"
        logger.info("epoch %.0f: train loss %s, validation loss %.4f (perplexity %.2f)%s",
                    state.epoch or 0, train, loss if loss is not None else float("nan"), ppl, extra)
