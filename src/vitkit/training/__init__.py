"""Training: recipes as dataclasses, the resumable training loop, evaluation and metrics."""

from vitkit.training.config import ModelConfig, OptimConfig, RunConfig, TrainConfig, load_config
from vitkit.training.evaluate import EvalResult, evaluate, plot_confusion
from vitkit.training.trainer import TrainingDiverged, train

__all__ = [
    "EvalResult",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainingDiverged",
    "evaluate",
    "load_config",
    "plot_confusion",
    "train",
]
