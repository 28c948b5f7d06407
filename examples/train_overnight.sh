#!/usr/bin/env bash
# Overnight training on one GPU with the rtx3060 preset (Linux/macOS twin of train_overnight.bat).
#
#   examples/train_overnight.sh --data path/to/data --model-name gpt2 [more theta-train flags]
#
# All output is appended to logs/overnight_<preset>_<timestamp>.log. After an abnormal exit
# (crash, OOM kill, power blip) theta-train is started again with --resume auto, at most
# MAX_RESTARTS times (default 3), so no completed epoch is lost. Exit codes 1 and 2 are user
# errors (bad data, bad flags, full disk): restarting cannot fix them, so the script stops; so do
# 130 and 143, a clean stop after Ctrl+C or SIGTERM (a checkpoint was saved: resume it later).
set -u
PRESET="${PRESET:-rtx3060}"
MAX_RESTARTS="${MAX_RESTARTS:-3}"
RESTART_DELAY="${RESTART_DELAY:-10}"  # seconds between a crash and the restart
THETA_TRAIN="${THETA_TRAIN:-theta-train}"
mkdir -p logs
LOG="logs/overnight_${PRESET}_$(date +%Y%m%d_%H%M%S).log"

attempt=0
extra=()
while :; do
  echo "=== $(date '+%F %T') attempt $((attempt + 1)): $THETA_TRAIN --preset $PRESET $* ${extra[*]}" | tee -a "$LOG"
  $THETA_TRAIN --preset "$PRESET" "$@" "${extra[@]}" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    echo "=== $(date '+%F %T') training finished" | tee -a "$LOG"
    exit 0
  fi
  if [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ]; then
    echo "=== $(date '+%F %T') theta-train refused the input (exit $rc); fix it and run again" | tee -a "$LOG"
    exit "$rc"
  fi
  if [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; then
    echo "=== $(date '+%F %T') stopped on request (exit $rc); continue later with --resume auto" | tee -a "$LOG"
    exit "$rc"
  fi
  attempt=$((attempt + 1))
  if [ "$attempt" -gt "$MAX_RESTARTS" ]; then
    echo "=== $(date '+%F %T') exit $rc; gave up after $MAX_RESTARTS restarts" | tee -a "$LOG"
    exit "$rc"
  fi
  echo "=== $(date '+%F %T') exit $rc; restarting with --resume auto in $RESTART_DELAY s ($attempt/$MAX_RESTARTS)" | tee -a "$LOG"
  extra=(--resume auto)
  sleep "$RESTART_DELAY"
done
