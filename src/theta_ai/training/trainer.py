"""ThetaTrainer: ``transformers.Trainer`` plus theta_ai's checkpoint naming. Nothing else is overridden.

Trainer writes each checkpoint as ``checkpoint-<step>`` (a staging name that resume never
considers); once every rank has finished writing into it, the main process adds ``theta_run.json``
and the validation examples, fsyncs it, and renames it to ``theta_checkpoint_epoch_N`` (or
``theta_checkpoint_step_S`` when a stop request saved in the middle of an epoch). Before writing,
free disk space is checked against the size of the previous checkpoint.

One speed-up, exact by construction: in training, the language-model head (for GPT-2 a 50,257-wide matmul,
most of a small model's FLOPs) runs only on the positions that predict an answer token, listed by the
collator on the CPU (``answer_head``; training/loss.py, in slices with ``chunked_loss``). Where the start-up
proof of that path fails, and in evaluation, the head is skipped on the leading columns where no row of the
batch has an answer label, through the ``logits_to_keep`` argument that transformers' causal LMs accept. The
loss is unchanged either way: the skipped positions carry label -100.

One correction: a causal LM that transformers leaves without a ``loss_type`` (GPT-2) is given the name of the
loss it uses, so that Trainer counts the loss normaliser ``num_items_in_batch`` over prediction targets only
(:func:`name_causal_lm_loss`).
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from theta_ai.data.collate import (ANSWER_POSITIONS, ANSWER_START, ANSWER_TARGETS, MARK_KEYS, REAL_TOKENS,
                                   answer_positions, mark_batch)
from theta_ai.training import checkpoints as ckpt
from theta_ai.training.loss import answer_cross_entropy, chunk_rows, hidden_states_out, name_causal_lm_loss
from theta_ai.training.disk import DiskSpaceError, checkpoint_sizes, is_disk_full


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """Trainer's length-grouped sampler, shuffled by a generator seeded with ``seed + epoch``.

    Trainer's own instance draws from the global torch RNG, so after a mid-epoch resume (where the
    RNG is restored to the moment of the save, not to the start of the epoch) it would replay a
    different order. Seeding per epoch makes the order a pure function of (seed, epoch), like
    accelerate's seedable random sampler in the ungrouped case. The epoch comes from Trainer's
    ``set_epoch`` calls and, where those do not reach the sampler, from :class:`SamplerEpochCallback`.
    """

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + int(epoch))


class SamplerEpochCallback(TrainerCallback):
    """Gives a :class:`SeededLengthGroupedSampler` its epoch at every epoch start, from ``state.epoch``.

    Why (checked against transformers 5.24.0 and accelerate 1.15.0): on a mid-epoch resume
    ``Trainer._run_epoch`` swaps the epoch's dataloader for accelerate's ``skip_first_batches(dataloader, n)``
    and then calls ``set_epoch(epoch)`` on that. In a multi-process run the new ``DataLoaderShard`` holds the
    sampler three levels down, ``SkipBatchSampler`` -> ``BatchSamplerShard`` -> torch ``BatchSampler`` ->
    sampler; ``DataLoaderShard.set_epoch`` looks at most at ``batch_sampler.batch_sampler.sampler`` (here the
    ``BatchSamplerShard``'s, which has none), Trainer's own extra reach stops at
    ``batch_sampler.batch_sampler`` (the ``BatchSamplerShard``, no ``set_epoch``) and neither accelerate
    wrapper forwards it, so the resumed epoch drew epoch 0's order and skipped the wrong batches. (With one
    process there is no ``BatchSamplerShard`` and accelerate does reach it.) ``on_epoch_begin`` comes just
    before, with ``state.epoch`` restored from the checkpoint (e.g. 1.5 during the second epoch): its whole
    part is Trainer's epoch index, the same number Trainer passes to ``set_epoch`` where that does arrive.
    Public callback API only; no private Trainer method is touched for this.
    """

    def __init__(self, sampler: SeededLengthGroupedSampler):
        self.sampler = sampler

    def on_epoch_begin(self, args, state, control, **kwargs):
        # mid-epoch values are at least 1/steps_in_epoch away from the next whole number; the epsilon only
        # guards an exact epoch end against rounding
        self.sampler.set_epoch(int((state.epoch or 0) + 1e-9))


class ThetaTrainer(Trainer):
    """A Trainer whose checkpoints are published atomically as ``theta_checkpoint_epoch_N``.

    Extra keyword arguments:
        run_info: JSON-able dict written to ``theta_run.json`` in every checkpoint (template, limits, ...).
        validation_jsonl: text of the validation examples, stored with each checkpoint for theta-eval.
        keep_checkpoints: keep only the newest N epoch checkpoints (``--save-total-limit``).
    """

    def __init__(self, *args, run_info: dict | None = None, validation_jsonl: str = "",
                 keep_checkpoints: int | None = None, chunked_loss: bool = False, answer_head: bool = False,
                 **kwargs):
        name_causal_lm_loss(kwargs.get("model", args[0] if args else None))
        super().__init__(*args, **kwargs)
        self.run_info = run_info or {}
        self.validation_jsonl = validation_jsonl
        self.keep_checkpoints = keep_checkpoints
        self.published: list[Path] = []
        self._real_tokens_pending = 0  # counted by compute_loss from the collator's marks, summed in log()
        self.chunked_loss = chunked_loss  # the fused answer-token head in 256 MiB slices (training/loss)
        self.answer_head = answer_head  # the LM head on the answer positions only (implied by chunked_loss)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the real tokens counted since the last log to ``state.num_input_tokens_seen``, then log.

        Trainer's own count (``include_num_input_tokens_seen``) gathers and ``.item()``-s every micro-batch; the
        collator counts on the CPU instead, and the processes' counts are summed here, once per log (every
        process calls ``log`` at the same steps).
        """
        pending, self._real_tokens_pending = self._real_tokens_pending, 0
        if self.args.world_size > 1:
            total = torch.tensor(pending, device=self.args.device, dtype=torch.long)
            pending = int(self.accelerator.reduce(total, reduction="sum").item())
        self.state.num_input_tokens_seen = (self.state.num_input_tokens_seen or 0) + pending
        super().log(logs, start_time)

    def _accepts_logits_to_keep(self) -> bool:
        if not hasattr(self, "_logits_to_keep_ok"):
            model = self.accelerator.unwrap_model(self.model)
            model = model.get_base_model() if hasattr(model, "get_base_model") else model
            self._logits_to_keep_ok = "logits_to_keep" in inspect.signature(model.forward).parameters
        return self._logits_to_keep_ok

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # The marks MarkedCollator computed on the CPU (data/collate.py); the model never sees them.
        marks = {k: inputs[k] for k in MARK_KEYS if k in inputs}
        if marks:
            inputs = {k: v for k, v in inputs.items() if k not in MARK_KEYS}
        if marks.get(REAL_TOKENS) is not None and model.training:
            self._real_tokens_pending += marks[REAL_TOKENS]
        labels = inputs.get("labels")
        if (return_outputs or labels is None or labels.dim() != 2 or self.label_smoother is not None
                or self.compute_loss_func is not None):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if (self.answer_head or self.chunked_loss) and model.training:
            positions, targets = marks.get(ANSWER_POSITIONS), marks.get(ANSWER_TARGETS)
            if positions is None:  # a batch from another collator: find the answer positions here (a host sync)
                positions, targets = answer_positions(labels)
            return self._answer_head_loss(model, inputs, positions, targets, num_items_in_batch)
        if not self._accepts_logits_to_keep():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        start = marks.get(ANSWER_START)
        if start is None:  # a batch from another collator: find the first trained column here (a host sync)
            start = mark_batch({"labels": labels, "input_ids": labels})[ANSWER_START]
        if start > 0:  # logits at [start, T) predict labels (start, T]; labels[:, start] is -100 in every row
            inputs = {**inputs, "labels": labels[:, start:], "logits_to_keep": labels.shape[1] - start}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _answer_head_loss(self, model, inputs, positions, targets, num_items_in_batch):
        """Trainer's own compute_loss with a ``compute_loss_func`` (its public hook): Trainer takes the labels out,
        runs the model, whose head is the identity meanwhile, so its "logits" are the hidden states, and scales the
        returned loss as for any loss function; the function applies the head to the answer positions only, in
        slices with the chunked loss (training/loss.py)."""
        with hidden_states_out(model) as head:
            rows = chunk_rows(head.out_features) if self.chunked_loss else None
            self.compute_loss_func = lambda outputs, labels, num_items_in_batch=None: answer_cross_entropy(
                outputs.logits, positions, targets, head, num_items_in_batch, rows)
            try:
                return super().compute_loss(model, inputs, False, num_items_in_batch)
            finally:
                self.compute_loss_func = None

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = getattr(dataset, "lengths", None)  # an on-the-fly (augmented) dataset knows its lengths
        if lengths is not None and self.args.train_sampling_strategy == "group_by_length":
            sampler = SeededLengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                                 lengths=list(lengths), seed=self.args.data_seed or self.args.seed)
        else:
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                sampler = SeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths,
                                                     seed=self.args.data_seed or self.args.seed)
        # (_get_train_sampler is a private Trainer method, overridden here since before this callback; its
        # signature is pinned by tests/test_distributed.py.) Trainer builds the train dataloader, and so this
        # sampler, at the start of each training loop, before on_train_begin: the callback that feeds the
        # sampler its epoch is (re)registered here, one per trainer.
        self.pop_callback(SamplerEpochCallback)
        if isinstance(sampler, SeededLengthGroupedSampler):
            self.add_callback(SamplerEpochCallback(sampler))
        return sampler

    def write_run_files(self, folder: Path) -> None:
        """Write ``theta_run.json`` and the validation examples into a model folder."""
        info = dict(self.run_info, epoch=round(self.state.epoch or 0, 4), global_step=self.state.global_step)
        (folder / ckpt.RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
        if self.validation_jsonl:
            (folder / ckpt.VALIDATION_FILE).write_text(self.validation_jsonl, encoding="utf-8")

    def _space_needed(self) -> int:
        """Bytes the next checkpoint needs: the last one's size, or the estimate from the model, plus 10%.

        The estimate counts what Trainer writes: all weights and their optimizer state, or for a LoRA
        run (a PeftModel saves only its adapter) the adapter and its optimizer state.
        """
        if self.published and self.published[-1].is_dir():
            size = ckpt.folder_size(self.published[-1])
        else:
            size = checkpoint_sizes(self.accelerator.unwrap_model(self.model), 1, None).checkpoint
        return int(size * 1.1)

    # Private Trainer method, checked against transformers 5.24: Trainer offers no public hook that runs
    # after a checkpoint folder is complete on every rank but before its name is visible (on_save runs on
    # the finished folder). Overridden to (1) check free space first, (2) mark the staging folder as
    # theta_ai's before Trainer writes into it, (3) turn a full disk into DiskSpaceError, (4) point
    # best_model_checkpoint at theta_best (Trainer records checkpoint-N, a name that no longer exists after
    # the rename) and (5) publish atomically under the guide's name. tests/test_trainer_overrides.py fails
    # loudly when the method's signature or the staging name it writes changes.
    def _save_checkpoint(self, model, trial) -> None:
        run_dir = Path(self._get_output_dir(trial=trial))
        staging = run_dir / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            ckpt.ensure_free_space(run_dir, self._space_needed())
            ckpt.mark_staging(staging)
        try:
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank has written its RNG state into staging
            if self.args.should_save:
                self._publish(run_dir, staging)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            if self.args.should_save and staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            raise DiskSpaceError(
                f"the disk holding {run_dir}/ filled up while writing the checkpoint of step "
                f"{self.state.global_step} ({exc}); that checkpoint was removed and the earlier ones are intact. "
                "Free some space (or lower --save-total-limit), then continue with --resume auto") from None
        self.accelerator.wait_for_everyone()

    def _publish(self, run_dir: Path, staging: Path) -> None:
        name = ckpt.checkpoint_name(self.state.epoch, self.state.global_step)
        # Trainer wrote best_model_checkpoint = checkpoint-<best step> (or kept a stale one); theta_best is
        # the folder that holds the best model under theta_ai's names, and it survives rotation.
        self.state.best_model_checkpoint = str(run_dir / ckpt.BEST_DIR) if self.state.best_global_step else None
        self.state.save_to_json(str(staging / "trainer_state.json"))
        self.write_run_files(staging)
        final = ckpt.publish(staging, run_dir / name)
        ckpt.unmark(final)
        self.published.append(final)
        if name.startswith(ckpt.EPOCH_PREFIX):
            ckpt.remove_superseded_step_checkpoints(run_dir, self.state.global_step)
            ckpt.rotate(run_dir, self.keep_checkpoints)
