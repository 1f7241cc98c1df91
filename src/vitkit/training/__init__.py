"""Training: recipes as dataclasses, objectives (supervised, masked patch prediction, DeiT distillation), the
runtime, the resumable training loop, the fine-tuning recipe, evaluation, metrics."""

from typing import TYPE_CHECKING

from vitkit.lazy import lazy_package

if TYPE_CHECKING:
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
    from vitkit.training.distill import Distillation, TeacherInputs
    from vitkit.training.distill_config import DistillSettings
    from vitkit.training.finetune import finetune_config
    from vitkit.training.mpp import MaskedPatchPrediction
    from vitkit.training.mpp_config import MPPSettings, pretrain_config
    from vitkit.training.objective_registry import OBJECTIVES, register_objective
    from vitkit.training.objectives import (
        Batch,
        BuildContext,
        Objective,
        StepOutput,
        Supervised,
        Validation,
        ValidationContext,
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

lazy_package(
    __name__,
    {
        "vitkit.inference": ("EvalResult", "evaluate", "plot_confusion"),
        "vitkit.training.config": (
            "ModelConfig",
            "ObjectiveConfig",
            "ObjectiveSettings",
            "OptimConfig",
            "RunConfig",
            "RuntimeConfig",
            "TrainConfig",
            "load_config",
        ),
        "vitkit.training.distill": ("Distillation", "TeacherInputs"),
        "vitkit.training.distill_config": ("DistillSettings",),
        "vitkit.training.finetune": ("finetune_config",),
        "vitkit.training.mpp": ("MaskedPatchPrediction",),
        "vitkit.training.mpp_config": ("MPPSettings", "pretrain_config"),
        "vitkit.training.objective_registry": ("OBJECTIVES", "register_objective"),
        "vitkit.training.objectives": (
            "Batch",
            "BuildContext",
            "Objective",
            "StepOutput",
            "Supervised",
            "Validation",
            "ValidationContext",
        ),
        "vitkit.training.runtime": ("Runtime",),
        "vitkit.training.trainer": ("Trainer", "TrainingDiverged", "create_trainer", "train"),
    },
)
