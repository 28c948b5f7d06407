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
    # A laptop-CPU run on the bundled sample data: 3.5-7.5 minutes of training on 2 cores, by the host (205 s and
    # 443 s on two idle 2-core Xeons).
    # Measured (benchmarks/quickstart_quality.py, benchmarks/README.md): theta-eval's ROUGE-L on the held-out
    # paraphrases is ~0.32 (0.14 with the GPT-2-layout theta-tiny of earlier versions, answers only, dropout
    # 0.1). What moved it: theta-tiny as a Llama (relative positions), the loss on the questions too, dropout
    # 0.3. More layers, 80 epochs, a larger learning rate and noise on the answer inputs were each worse.
    "cpu-quickstart": {
        "model_name": "theta-tiny",  # built in, offline, 0.66M parameters (Llama, 2 layers x 128): no download
        # sample:NAME = the sample data shipped inside the package (theta_ai.config.samples), so the preset
        # works from any folder and from an installed wheel, not only from the source checkout
        "data": ["sample:theta_sample_train.json"],
        "val_data": ["sample:theta_sample_val.json"],
        # 60 epochs x 84 steps = 5,040 steps. 80 epochs (the schedule stretched) ended worse, ROUGE-L 0.21 against
        # 0.28 (dropout 0.1 in both)
        "epochs": 60.0,
        # 4, not 8: twice the optimizer steps per epoch for ~1.2x the time per epoch (measured on the GPT-2
        # layout: validation loss after 12 epochs 4.65 at batch 4 against 4.87 at batch 8)
        "batch_size": 4,
        "grad_accum": 1,  # 84 optimizer steps per epoch on the sample data
        # a tiny randomly initialised model needs a far larger step than fine-tuning; 5e-3 gave ROUGE-L 0.11
        # against 0.28 at 3e-3 (1e-2 stalled at unigram guessing on the GPT-2 layout)
        "learning_rate": 3e-3,
        "warmup_steps": 30,  # 500 warmup steps would be a tenth of the run; 30 keep the first steps stable
        # the validation questions are rewordings of training questions: varied questions (rephrasing,
        # synonyms, casing, typos; answers untouched) every epoch keep the model from memorising one wording
        "augment": True,
        # theta-tiny's one dropout is in attention (Llama has none on the residual stream). ROUGE-L with the
        # loss on questions and answers: 0.17 at 0.0 (it recites the training wording), 0.28 at 0.1, 0.29 at 0.2,
        # 0.32 at 0.3
        "dropout": 0.3,
        # the loss on the question tokens too: predicting the (augmented) questions teaches the model what
        # their words have in common, which answering a paraphrase needs. Answers only: ROUGE-L 0.15; questions
        # and answers: 0.28 (dropout 0.1 in both; same time, the forward pass is the same). The validation set
        # is still scored on the answers only
        "train_on_prompt": True,
        "max_seq_length": 256,  # the sample answers are short
        "logging_steps": 20,  # ~4 lines per epoch at 84 steps per epoch
        "checkpoint_dir": "models/quickstart",  # keep the real models/ folder for real runs
    },
}
