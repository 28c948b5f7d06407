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
    # A laptop-CPU run on the bundled sample data that finishes in a few minutes.
    "cpu-quickstart": {
        "model_name": "theta-tiny",  # built in, offline, ~0.8M parameters: trains in minutes on 2 cores
        # sample:NAME = the sample data shipped inside the package (theta_ai.config.samples), so the preset
        # works from any folder and from an installed wheel, not only from the source checkout
        "data": ["sample:theta_sample_train.json"],
        "val_data": ["sample:theta_sample_val.json"],
        "epochs": 20.0,  # the validation loss falls from ~6.6 to ~4.6 on the sample data (about a minute on 2 cores)
        "batch_size": 8,  # small sequences (~70 tokens): a bigger batch keeps the CPU busy
        "grad_accum": 1,  # ~40 optimizer steps per epoch on the sample data, not 10
        "learning_rate": 3e-3,  # a tiny randomly initialised model needs a far larger step than fine-tuning
        "warmup_steps": 30,  # 500 warmup steps would outlast the whole run
        "max_seq_length": 256,  # the sample answers are short
        "logging_steps": 5,
        "checkpoint_dir": "models/quickstart",  # keep the real models/ folder for real runs
    },
}
