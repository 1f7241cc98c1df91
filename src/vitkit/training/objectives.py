"""Training objectives: what one step computes from a model and a batch, and how a run is validated.

The training loop knows nothing else about the task. It hands each augmented batch to
`objective(model, batch)` and gets back a loss to minimise and a few metrics to log; after each epoch it asks
`objective.evaluate(...)` for validation metrics and keeps the checkpoint that is best by
`objective.best_metric`. A new way to train (distillation from a teacher, masked-patch prediction) is a new
`Objective` subclass; the loop does not change.

An objective is an `nn.Module` so that it can own trainable parts (a prediction head used only in
pre-training: optimised with the model, saved in the training state, never in the model checkpoint) and so
that `ObjectiveStep(model, objective)` can be wrapped whole by DistributedDataParallel or FSDP: every
parameter a step touches is then synchronised, whichever of the model's methods the objective calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


class Objective(nn.Module):
    """Base class: subclasses set `name`, `best_metric`, `higher_is_better` and implement `forward`, `validate`."""

    name = "objective"
    best_metric = "top1"  # a key of `validate(...).values`, used to keep the best checkpoint
    higher_is_better = True
    needs_labels = True  # False for self-supervised objectives (any image folder will do)
    train_metrics: tuple[str, ...] = ("loss",)  # the keys of StepOutput.metrics, logged per step and per epoch
    val_metrics: tuple[str, ...] = ("loss",)  # the keys of Validation.values
    # Some objectives leave parameters of the model unused (a pre-training objective ignores the head):
    # DistributedDataParallel must then look for them after each backward.
    find_unused_parameters = False

    def forward(self, model: nn.Module, batch: Batch) -> StepOutput:  # pragma: no cover - abstract
        """Loss and metrics of `model` on `batch`."""
        raise NotImplementedError

    def validate(
        self,
        model: nn.Module,
        source: ImageSource,
        transform: EvalTransform,
        *,
        batch_size: int,
        device: torch.device,
        precision: str,
    ) -> Validation:  # pragma: no cover - abstract
        """Validation metrics of `model` (eval mode) over every image of `source`."""
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

    def __init__(self, eval_flip: bool = False) -> None:
        super().__init__()
        self.eval_flip = eval_flip  # validate on each image and its mirror, averaging the logits

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

    def validate(
        self,
        model: nn.Module,
        source: ImageSource,
        transform: EvalTransform,
        *,
        batch_size: int,
        device: torch.device,
        precision: str,
    ) -> Validation:
        """Top-1, top-5 and loss over `source`."""
        result = evaluate(
            model, source, transform, batch_size=batch_size, device=device, precision=precision, flip=self.eval_flip
        )
        return Validation({"top1": result.top1, "top5": result.top5, "loss": result.loss}, result.images)


class ObjectiveStep(nn.Module):
    """The model and its objective as one module, so DDP/FSDP see every parameter a training step uses."""

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: Batch) -> StepOutput:
        """One (micro-)batch through the objective."""
        return self.objective(self.model, batch)


# Recipe name -> builder(train_config, model, num_classes) -> Objective. A new objective registers itself here.
OBJECTIVES: dict[str, Callable[[Any, nn.Module, int], Objective]] = {
    "supervised": lambda config, model, num_classes: Supervised(eval_flip=config.run.eval_flip)
}


def register_objective(name: str) -> Callable:
    """Make an objective builder available to recipes as `objective.name: NAME` (a decorator)."""

    def decorate(builder: Callable[[Any, nn.Module, int], Objective]) -> Callable[[Any, nn.Module, int], Objective]:
        OBJECTIVES[name] = builder
        return builder

    return decorate


def build_objective(config: Any, model: nn.Module, num_classes: int) -> Objective:
    """The objective a training config names (`config.objective.name`), built for `model`."""
    return OBJECTIVES[config.objective.name](config, model, num_classes)
