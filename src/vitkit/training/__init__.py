"""Training: recipes as dataclasses, objectives, the runtime, the resumable training loop, evaluation, metrics."""

from vitkit.training.config import (
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    RunConfig,
    RuntimeConfig,
    TrainConfig,
    load_config,
)
from vitkit.training.distill import Distillation, TeacherInputs
from vitkit.training.evaluate import EvalResult, evaluate, plot_confusion
from vitkit.training.objectives import Batch, Objective, StepOutput, Supervised, Validation, register_objective
from vitkit.training.runtime import Runtime
from vitkit.training.trainer import TrainingDiverged, train

__all__ = [
    "Batch",
    "Distillation",
    "EvalResult",
    "ModelConfig",
    "Objective",
    "ObjectiveConfig",
    "OptimConfig",
    "RunConfig",
    "Runtime",
    "RuntimeConfig",
    "StepOutput",
    "Supervised",
    "TeacherInputs",
    "TrainConfig",
    "TrainingDiverged",
    "Validation",
    "evaluate",
    "load_config",
    "plot_confusion",
    "register_objective",
    "train",
]
