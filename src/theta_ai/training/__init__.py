"""Training: what a run resolves (setup), the run itself (run), ThetaTrainer, checkpoints, disk, lock, callbacks."""
