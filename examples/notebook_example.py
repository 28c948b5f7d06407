"""theta_ai as a library, cell by cell (runs from any folder: python examples/notebook_example.py).

Each block below is a notebook cell; together they do what `theta-train --preset cpu-quickstart --epochs 3`
does, with a look at the data and the label mask on the way.
"""

# %% Load and check the data
from theta_ai import ExampleFormatter, find_duplicates, load_examples, resolve_config
from theta_ai.config.samples import sample_path  # the sample data ships inside the package

train_data = load_examples([str(sample_path("theta_sample_train.json"))])
print(len(train_data.examples), "examples; first question:", train_data.examples[0].question)
print(find_duplicates(train_data.examples).lines() or "no duplicate questions")

# %% Resolve a configuration: the preset, then your overrides (the same as flags); the preset's data are
# sample:theta_sample_train.json / sample:theta_sample_val.json, which resolve_config turns into real paths
cfg = resolve_config({"epochs": 3, "checkpoint_dir": "models/notebook"}, preset="cpu-quickstart")

# %% Prepare the run: model, tokenizer, datasets, TrainingArguments; nothing is trained yet
from theta_ai import prepare_run

run = prepare_run(cfg)
print("\n".join(run.notes + run.banner()))
row = run.formatter.encode(run.train_examples[0])
tok = run.loaded.tokenizer
print("trained part of the first example:", tok.decode([i for i, l in zip(row["input_ids"], row["labels"]) if l != -100]))

# %% Train (transformers.Trainer underneath) and look at the result
from theta_ai import train

result = train(cfg, prepared=run)
print("best model:", result.best_dir, "final:", result.final_dir)
print({k: round(v, 4) for k, v in result.metrics.items()})

# %% Use the best model with plain transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained(result.best_dir)
tokenizer = AutoTokenizer.from_pretrained(result.best_dir)
formatter = ExampleFormatter(tokenizer, template="qa")
import torch

prompt = torch.tensor([formatter.prompt_ids([{"role": "user", "content": "What is a firewall?"}])])
out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40, do_sample=False,
                     pad_token_id=tokenizer.pad_token_id)
print(tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True))
