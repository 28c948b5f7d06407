"""The memory planner: peak GPU memory of a training step from a model config, and the fastest settings
that fit a card (``theta-train --plan``). Nothing is allocated; model sizes come from meta-device models."""

from theta_ai.planner.estimate import (DEFAULT_GPU_MEMORY, GiB, Candidate, LoraSpec, MemoryEstimate, Plan,
                                       estimate_memory, parameter_bytes, parse_memory, plan)
from theta_ai.planner.report import plan_report, plan_table_markdown

__all__ = ["DEFAULT_GPU_MEMORY", "GiB", "Candidate", "LoraSpec", "MemoryEstimate", "Plan", "estimate_memory",
           "parameter_bytes", "parse_memory", "plan", "plan_report", "plan_table_markdown"]
