"""Models: loading (hub id, folder, GGUF, adapter folder, theta-tiny), LoRA through peft, saved weights, folders."""
