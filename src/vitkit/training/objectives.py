"""Training objectives: what one step computes from a model and a batch, and how a run is validated.

The training loop knows nothing else about the task. It hands each augmented batch to
`objective(model, batch)` and gets back a loss to minimise and a few metrics to log; after each epoch it asks
`objective.validate(model, context)` for validation metrics and keeps the checkpoint that is best by
`objective.best_metric`. A new way to train (distillation from a teacher, masked-patch prediction) is a new
`Objective` subclass in its own module; the loop does not change.

Registry (`vitkit.training.objective_registry`): a recipe's `objective.name` is a name of `OBJECTIVES` (name ->
"module:Class", imported only when a recipe names it) or a "package.module:Class" path, so a new objective in
its own module needs no edit here. An objective declares its recipe section with `Settings` (a dataclass of
`knob` fields, section `objective.<name>`, one flag per field) and builds itself with `build(settings, context)`.

An objective is an `nn.Module` so that it can own trainable parts (a prediction head used only in
pre-training: optimised with the model, saved in the training state, never in the model checkpoint) and so
that `ObjectiveStep(model, objective)` can be wrapped whole by DistributedDataParallel or FSDP: every
parameter a step touches is then synchronised, whichever of the model's methods the objective calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.data import EvalTransform, ImageSource
from vitkit.errors import UsageError
from vitkit.inference import evaluate


@dataclass
class Batch:
    """One augmented training batch on the training device."""

    images: torch.Tensor  # (B, C, H, W), normalised, augmented (Mixup/CutMix applied)
    targets: torch.Tensor | None = None  # (B, K) soft targets: label smoothing and mixing already in them
    labels: torch.Tensor | None = None  # (B,) the hard labels before mixing

    def __len__(self) -> int:
        return self.images.shape[0]

    def chunk(self, parts: int) -> list[Batch]:
        """Split into `parts` micro-batches (gradient accumulation)."""
        split = [t.chunk(parts) if t is not None else [None] * parts for t in (self.images, self.targets, self.labels)]
        return [Batch(*pieces) for pieces in zip(*split, strict=True)]


@dataclass
class StepOutput:
    """What an objective returns for one (micro-)batch: the loss and detached per-batch means to log."""

    loss: torch.Tensor  # scalar, mean over the batch
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # scalar tensors, means over the batch


@dataclass
class Validation:
    """Validation metrics of one set of weights; `values` holds what the objective reports (top1, loss, ...)."""

    values: dict[str, float]
    images: int

    def __getitem__(self, key: str) -> float:
        return self.values[key]


@dataclass(frozen=True)
class ValidationContext:
    """What every validation needs besides the model, built once per run by the loop."""

    source: ImageSource  # the validation images
    transform: EvalTransform  # resize and normalise, on `device`
    batch_size: int
    device: torch.device
    precision: str  # the run's resolved precision: "bf16", "fp16" or "fp32"
    rank: int = 0  # under torchrun: this process's rank, and how many there are; an objective that
    world_size: int = 1  # passes them to `evaluate` scores each image on one rank only (the counts are summed)


@dataclass(frozen=True)
class BuildContext:
    """What an objective is built from besides its own settings: the student and the run's data settings."""

    model: nn.Module  # on the training device, `class_names` set to the data's
    num_classes: int
    mean: tuple[float, ...]  # the data's normalisation (to undo for pixel targets, or to re-normalise for a teacher)
    std: tuple[float, ...]
    eval_tta: str = "none"  # run.eval_tta: test-time augmentation at validation (vitkit.inference.tta)


class Objective(nn.Module):
    """Base class: subclasses set `name`, `best_metric`, `higher_is_better` and implement `forward`, `validate`.

    `Settings` is the dataclass of the objective's recipe section `objective.<name>` (None: no settings);
    `build` makes the objective from those settings for one run.
    """

    name = "objective"
    best_metric = "top1"  # a key of `validate(...).values`, used to keep the best checkpoint
    higher_is_better = True
    needs_labels = True  # False for self-supervised objectives (any image folder will do)
    train_metrics: tuple[str, ...] = ("loss",)  # the keys of StepOutput.metrics, logged per step and per epoch
    val_metrics: tuple[str, ...] = ("loss",)  # the keys of Validation.values
    # Some objectives leave parameters of the model unused (a pre-training objective ignores the head):
    # DistributedDataParallel must then look for them after each backward.
    find_unused_parameters = False
    Settings: ClassVar[type | None] = None

    @classmethod
    def build(cls, settings: object | None, context: BuildContext) -> Objective:
        """The objective for one run (default: `cls()`, for objectives without settings)."""
        return cls()

    def forward(self, model: nn.Module, batch: Batch) -> StepOutput:  # pragma: no cover - abstract
        """Loss and metrics of `model` on `batch`."""
        raise NotImplementedError

    def validate(self, model: nn.Module, context: ValidationContext) -> Validation:  # pragma: no cover - abstract
        """Validation metrics of `model` (eval mode) over every image of `context.source`."""
        raise NotImplementedError

    def is_better(self, value: float, best: float | None) -> bool:
        """Whether `value` of `best_metric` improves on `best` (ties keep the earlier checkpoint)."""
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best


class Supervised(Objective):
    """Cross-entropy against the (smoothed, mixed) soft targets of the batch; validated by top-1 accuracy."""

    name = "supervised"
    train_metrics = ("loss", "acc")
    val_metrics = ("top1", "top5", "loss")

    def __init__(self, eval_tta: str = "none") -> None:
        super().__init__()
        self.eval_tta = eval_tta  # test-time augmentation at validation: none | flip | multicrop

    @classmethod
    def build(cls, settings: object | None, context: BuildContext) -> Supervised:
        """Cross-entropy, validated with the run's test-time flips."""
        return cls(eval_tta=context.eval_tta)

    def forward(self, model: nn.Module, batch: Batch) -> StepOutput:
        """Soft-target cross-entropy (label smoothing and Mixup/CutMix are already in `batch.targets`)."""
        logits = model(batch.images)
        return self.classification_output(logits, batch)

    @staticmethod
    def classification_output(logits: torch.Tensor, batch: Batch) -> StepOutput:
        """Cross-entropy of `logits` against the soft targets, with training accuracy against their argmax."""
        if batch.targets is None:
            raise UsageError("a supervised objective needs labelled data; this batch has no targets")
        loss = F.cross_entropy(logits.float(), batch.targets)
        accuracy = (logits.detach().argmax(1) == batch.targets.argmax(1)).float().mean() * 100
        return StepOutput(loss, {"loss": loss.detach(), "acc": accuracy})

    def validate(self, model: nn.Module, context: ValidationContext) -> Validation:
        """Top-1, top-5 and loss over `context.source`."""
        result = evaluate(
            model, context.source, context.transform, batch_size=context.batch_size, device=context.device,
            precision=context.precision, tta=self.eval_tta,
            rank=context.rank, world_size=context.world_size,
        )  # fmt: skip
        return Validation({"top1": result.top1, "top5": result.top5, "loss": result.loss}, result.images)


class ObjectiveStep(nn.Module):
    """The model and its objective as one module, so DDP/FSDP see every parameter a training step uses."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: Batch) -> StepOutput:
        """One (micro-)batch through the objective."""
        return self.objective(self.model, batch)
