"""Training: recipes as dataclasses, objectives (supervised, masked patch prediction, DeiT distillation), the
runtime, the resumable training loop, the fine-tuning recipe, evaluation, metrics."""

from vitkit.inference import EvalResult, evaluate, plot_confusion
from vitkit.training.config import (
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    RunConfig,
    RuntimeConfig,
    TrainConfig,
    load_config,
)
from vitkit.training.distill import Distillation, TeacherInputs  # registers objective "distill"
from vitkit.training.finetune import finetune_config
from vitkit.training.mpp import MaskedPatchPrediction, pretrain_config  # registers objective "mpp"
from vitkit.training.objectives import Batch, Objective, StepOutput, Supervised, Validation, register_objective
from vitkit.training.runtime import Runtime
from vitkit.training.trainer import TrainingDiverged, train

__all__ = [
    "Batch",
    "Distillation",
    "EvalResult",
    "MaskedPatchPrediction",
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
    "finetune_config",
    "load_config",
    "plot_confusion",
    "pretrain_config",
    "register_objective",
    "train",
]
