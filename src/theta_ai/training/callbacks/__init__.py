"""theta_ai's Trainer callbacks: behaviour added through ``TrainerCallback`` hooks, never a copied loop."""

from theta_ai.training.callbacks.best import BestModelCallback
from theta_ai.training.callbacks.epochs import EpochAwareDatasetCallback
from theta_ai.training.callbacks.host_memory import HostMemoryTrimCallback
from theta_ai.training.callbacks.progress import TrainingProgressCallback
from theta_ai.training.callbacks.spike_guard import SpikeGuardCallback
from theta_ai.training.callbacks.stop import GracefulStopCallback
from theta_ai.training.callbacks.summary import EpochSummaryCallback

__all__ = ["BestModelCallback", "EpochAwareDatasetCallback", "EpochSummaryCallback", "GracefulStopCallback",
           "HostMemoryTrimCallback", "SpikeGuardCallback", "TrainingProgressCallback"]
