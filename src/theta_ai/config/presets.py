"""Presets: named sets of option values, each one that differs from the option default commented.

The option defaults in :data:`theta_ai.config.OPTIONS` already are the RTX 3060 recipe of the
Theta AI training guide (batch 4 x accumulation 4, learning rate 5e-5, warmup 500, weight decay
0.01, 512 tokens, 100 epochs, fp16 on CUDA, evaluate and save every epoch, best model by
validation loss, TensorBoard). A preset lists only what it changes, with why.
"""

from __future__ import annotations

DEFAULT_PRESET = "rtx3060"

PRESETS: dict[str, dict] = {
    # The guide's recipe for a 12 GB RTX 3060 with a GPT-2-class model: the option defaults as they are.
    # Peak memory for gpt2 (124M) at batch 4 x 512 tokens in fp16 is well under 12 GB; see `--plan`.
    "rtx3060": {},
    # rtx3060 plus "enhanced training": augmentation, cosine restarts, early stopping, the spike
    # guard, gradient checkpointing and gradient histograms (fp16 on CUDA comes from precision auto).
    "rtx3060-enhanced": {
        # Recompute activations in the backward pass: ~30% slower steps, but activations stop
        # dominating memory, which leaves room for gpt2-medium or 1,024-token examples on 12 GB.
        "gradient_checkpointing": True,
        "augment": True,  # 100 epochs over a few thousand pairs memorise them; varied questions generalise
        "lr_scheduler": "cosine-restarts",  # restarts shake the model out of a plateau on long runs
        "lr_cycles": 4,  # one restart every 25 epochs of a 100-epoch run
        "early_stopping_patience": 5,  # stop after 5 epochs without a better validation loss
        "spike_guard": True,  # roll back to theta_best on a validation-loss spike or a NaN loss
        "histogram_steps": 500,  # modest: histograms cost a copy of every weight and gradient
    },
    # Fine-tune a pretrained chat model with LoRA: the settings measured in benchmarks/real_model_quality.py on
    # SmolLM2-135M-Instruct with the bundled data (ROUGE-L on the held-out paraphrases 0.176 zero-shot -> 0.436,
    # ~13-18 minutes of training on 2 CPU cores). Pass your model: theta-train --preset lora --model-name PATH --data ...
    "lora": {
        "lora": True,  # adapters only: a fraction of the memory of a full fine-tune, small checkpoints
        "lora_r": 16,  # with alpha 32 an update scale of 2
        "lora_alpha": 32,
        "lora_dropout": 0.0,  # a few hundred pairs over a few epochs must be fitted, not regularised
        # 5e-5 is a full-fine-tune rate; at 1e-3 (batch 8, 3 epochs) the model still underfit (val loss 1.54)
        "learning_rate": 2e-3,
        "warmup_ratio": 0.05,  # a 5% ramp: 500 warmup steps would outlast a short run
        # 4 epochs at batch 2: validation loss 1.85, 1.08, 0.60, 0.43, ROUGE-L 0.436. Batch 4 took as long per
        # epoch (more padding) for half the updates: 4 epochs reached 0.367, 6 epochs 0.490 in 1.5x the time
        "epochs": 4.0,
        "batch_size": 2,
        "grad_accum": 1,
    },
    # A laptop-CPU run on the bundled sample data: about 8 minutes of training on 1 busy core, less on 2 idle ones.
    # Measured (benchmarks/quickstart_quality.py, benchmarks/README.md): the validation loss on the held-out
    # paraphrases falls from ~6.6 to ~2.0, but theta-eval's ROUGE-L on them is only ~0.14 (0.09 before): a
    # 0.7M-parameter model trained from scratch on 336 pairs learns the questions' wording, not their meaning.
    # Neither more epochs nor a wider theta-tiny (256 wide, 2.2M parameters: no better per epoch, twice the
    # time) got near 0.30 in minutes.
    "cpu-quickstart": {
        "model_name": "theta-tiny",  # built in, offline, 0.72M parameters (2 layers x 128): no download
        # sample:NAME = the sample data shipped inside the package (theta_ai.config.samples), so the preset
        # works from any folder and from an installed wheel, not only from the source checkout
        "data": ["sample:theta_sample_train.json"],
        "val_data": ["sample:theta_sample_val.json"],
        # 60 epochs x 84 steps = 5,040 steps (~470 s on one core of a busy machine): the validation loss still
        # falls at the end (~2.0; 20 epochs stopped at ~4.6, where every answer was word salad)
        "epochs": 60.0,
        # 4, not 8: twice the optimizer steps per epoch for ~1.2x the time per epoch; the validation loss
        # after 12 epochs was 4.65 at batch 4 against 4.87 at batch 8 (same learning rate)
        "batch_size": 4,
        "grad_accum": 1,  # 84 optimizer steps per epoch on the sample data
        # a tiny randomly initialised model needs a far larger step than fine-tuning; 1e-2 stalled at a
        # validation loss of ~5.6 (unigram guessing) for 13 epochs, 3e-3 did not
        "learning_rate": 3e-3,
        "warmup_steps": 30,  # 500 warmup steps would be a tenth of the run; 30 keep the first steps stable
        # the validation questions are rewordings of training questions: varied questions (rephrasing,
        # synonyms, casing, typos; answers untouched) every epoch lowered the best validation loss from
        # 4.66 (epoch 18, then rising: memorised wording) to 3.04 at 40 epochs (batch 8, dropout 0 in both)
        "augment": True,
        # theta-tiny's own 0.1, stated here so that the quick start does not depend on the config file.
        # 0.0 memorised more (80 epochs: 65% exact answers to the training questions) but answered the
        # paraphrases worse, ROUGE-L 0.09; 0.1 gave 0.14 and 0.2 gave 0.13 (60 epochs each)
        "dropout": 0.1,
        "max_seq_length": 256,  # the sample answers are short
        "logging_steps": 20,  # ~4 lines per epoch at 84 steps per epoch
        "checkpoint_dir": "models/quickstart",  # keep the real models/ folder for real runs
    },
}
