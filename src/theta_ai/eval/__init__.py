"""theta-eval: batched generation, the evaluation runner, error analysis, reports, and the training callback."""
