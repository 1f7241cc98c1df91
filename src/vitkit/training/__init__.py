"""Training: recipes as dataclasses, objectives (supervised, masked patch prediction, DeiT distillation), the
runtime, the resumable training loop, the fine-tuning recipe, evaluation, metrics."""

from vitkit.inference import EvalResult, evaluate, plot_confusion
from vitkit.training.config import (
    ModelConfig,
    ObjectiveConfig,
    ObjectiveSettings,
    OptimConfig,
    RunConfig,
    RuntimeConfig,
    TrainConfig,
    load_config,
)
from vitkit.training.distill import Distillation, DistillSettings, TeacherInputs
from vitkit.training.finetune import finetune_config
from vitkit.training.mpp import MaskedPatchPrediction, MPPSettings, pretrain_config
from vitkit.training.objectives import (
    OBJECTIVES,
    Batch,
    BuildContext,
    Objective,
    StepOutput,
    Supervised,
    Validation,
    ValidationContext,
    register_objective,
)
from vitkit.training.runtime import Runtime
from vitkit.training.trainer import Trainer, TrainingDiverged, create_trainer, train

__all__ = [
    "OBJECTIVES",
    "Batch",
    "BuildContext",
    "DistillSettings",
    "Distillation",
    "EvalResult",
    "MPPSettings",
    "MaskedPatchPrediction",
    "ModelConfig",
    "Objective",
    "ObjectiveConfig",
    "ObjectiveSettings",
    "OptimConfig",
    "RunConfig",
    "Runtime",
    "RuntimeConfig",
    "StepOutput",
    "Supervised",
    "TeacherInputs",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "Validation",
    "ValidationContext",
    "create_trainer",
    "evaluate",
    "finetune_config",
    "load_config",
    "plot_confusion",
    "pretrain_config",
    "register_objective",
    "train",
]
