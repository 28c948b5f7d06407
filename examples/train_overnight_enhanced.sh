#!/usr/bin/env bash
# Overnight training with the rtx3060-enhanced preset; same restart logic as train_overnight.sh.
#
#   examples/train_overnight_enhanced.sh --data path/to/data --model-name gpt2
PRESET=rtx3060-enhanced exec "$(dirname "$0")/train_overnight.sh" "$@"
