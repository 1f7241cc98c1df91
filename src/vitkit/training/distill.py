"""Distillation through attention (DeiT, Touvron et al. 2021, Sec. 4 and 5): a teacher supervises the student.

The student is a ViT with DeiT's distillation token (`distilled: true`): its class head learns the batch's
targets (label smoothing and Mixup/CutMix included) and its distillation head learns from the teacher,

    hard:  (1 - alpha) CE(cls, targets) + alpha CE(dist, argmax teacher)                  (alpha 0.5: DeiT's eq.)
    soft:  (1 - alpha) CE(cls, targets) + alpha tau^2 KL(softmax(teacher/tau) || softmax(dist/tau))

with DeiT's defaults alpha 0.5 and tau 1. As in DeiT's `losses.py`, the KL sum is divided by the number of
logits (batch x classes, the legacy `reduction='mean'` of PyTorch), not by the batch; the teacher's hard
labels are not smoothed (paper Sec. 5.1). Validation scores the average of both heads (the checkpoint's
inference) and each head alone.

DeiT's other option, "usual distillation" (Table 3: no distillation token, the distillation term on the class
head's logits), is `token: cls` (`--distill-token cls`): the same formulas with `dist` replaced by `cls`, for any
student (a ViT without the token, a ConvNet). With the default `token: dist` a student built from scratch gets
the distillation token automatically (`model.distilled: true`, said in the run's opening lines); a pretrained
student without one is refused, since adding a fresh token and head to trained weights is a choice to make
explicitly (`--distilled`), not silently.

The teacher is frozen (no gradient), always in eval mode, sees the same augmented batch under the run's
autocast, and is not a submodule: it is not in `state_dict()` or `parameters()`, so it is neither saved in
the training state, nor optimised, nor wrapped by DDP/FSDP. It is fed the student's batch re-normalised
(and resized) to the preprocessing its checkpoint records.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.data.normalize import denormalize, normalize
from vitkit.errors import UsageError
from vitkit.inference import Preprocessing, evaluate, load_for_inference
from vitkit.inference.evaluate import check_class_names
from vitkit.models import Model, labels_of
from vitkit.training.distill_config import DISTILL_KINDS, TOKENS, DistillSettings
from vitkit.training.objectives import Batch, BuildContext, Objective, StepOutput, Validation, ValidationContext

log = logging.getLogger("vitkit.training")

TIMM_PREFIX = "timm:"


def hard_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student's logits against the teacher's argmax (DeiT's hard-label distillation)."""
    return F.cross_entropy(student.float(), teacher.argmax(dim=1))


def soft_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 KL(softmax(teacher/tau) || softmax(student/tau)), summed and divided by the logit count as DeiT."""
    log_student = F.log_softmax(student.float() / tau, dim=1)
    log_teacher = F.log_softmax(teacher.float() / tau, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="sum", log_target=True)
    return kl * tau * tau / student.numel()


@dataclass(frozen=True)
class TeacherInputs:
    """How the student's batch becomes the teacher's input: undo the student's normalisation, apply the teacher's,
    resize to the teacher's resolution (None: any size)."""

    student_mean: Sequence[float]
    student_std: Sequence[float]
    mean: Sequence[float]
    std: Sequence[float]
    img_size: int | None = None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised for the student -> normalised (and sized) for the teacher."""
        if tuple(self.mean) != tuple(self.student_mean) or tuple(self.std) != tuple(self.student_std):
            images = normalize(denormalize(images, self.student_mean, self.student_std), self.mean, self.std)
        if self.img_size is not None and tuple(images.shape[-2:]) != (self.img_size, self.img_size):
            images = F.interpolate(images, size=(self.img_size, self.img_size), mode="bilinear", antialias=True)
        return images

    def describe(self) -> str:
        """What the teacher is fed, in words."""
        size = f"{self.img_size}px" if self.img_size else "the batch's size"
        same = tuple(self.mean) == tuple(self.student_mean) and tuple(self.std) == tuple(self.student_std)
        norm = "the student's normalisation" if same else f"mean {list(self.mean)}, std {list(self.std)}"
        return f"{size}, {norm}"


class Distillation(Objective):
    """DeiT's hard or soft distillation into the distillation head (token "dist"; the class head learns the
    targets), or into the class head itself (token "cls", DeiT's usual distillation)."""

    name = "distill"
    Settings = DistillSettings
    train_metrics = ("loss", "loss_cls", "loss_dist", "acc", "agree")  # agree: % distilled head argmax = teacher's
    val_metrics: tuple[str, ...] = ("top1", "top5", "loss", "top1_cls", "top1_dist")

    def __init__(
        self,
        teacher: nn.Module,
        kind: str = "hard",
        alpha: float = 0.5,
        tau: float = 1.0,
        *,
        token: str = "dist",
        inputs: TeacherInputs | None = None,
        eval_tta: str = "none",
    ) -> None:
        super().__init__()
        if kind not in DISTILL_KINDS:
            raise UsageError(f"distillation must be 'hard' or 'soft', got {kind!r}")
        if token not in TOKENS:
            raise UsageError(f"distillation token must be one of {TOKENS}, got {token!r}")
        self.kind, self.alpha, self.tau, self.token, self.eval_tta = kind, alpha, tau, token, eval_tta
        if token == "cls":
            self.val_metrics = ("top1", "top5", "loss")  # one head
        self.inputs = inputs  # None: the teacher takes the student's batch unchanged
        teacher.requires_grad_(False).eval()
        object.__setattr__(self, "_teacher", teacher)  # not a submodule: not saved, optimised or DDP-wrapped

    @classmethod
    def build(cls, settings: object | None, context: BuildContext) -> Distillation:
        """The recipe's distillation: `build_distillation`."""
        return build_distillation(settings if isinstance(settings, DistillSettings) else DistillSettings(), context)

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher."""
        return self._teacher

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for the student's batch (eval mode, no gradient, the caller's autocast)."""
        teacher = self._teacher.eval()  # the loop's .train() never reaches it, but a caller's might
        move_to(teacher, images.device)
        inputs = images if self.inputs is None else self.inputs(images)
        return teacher(inputs).float()

    def forward(self, model: nn.Module, batch: Batch) -> StepOutput:
        """Both heads (token "dist") or the class head (token "cls") on the batch, the teacher on the same batch;
        DeiT's combined loss."""
        if batch.targets is None:
            raise UsageError("distillation needs labelled data for the class head; this batch has no targets")
        check_student(model, self.token)
        if self.token == "dist":
            heads = model.forward_heads(model.forward_features(batch.images))
        else:
            heads = dict.fromkeys(("cls", "dist"), model(batch.images))  # usual distillation: one head learns both
        teacher = self.teacher_logits(batch.images)
        check_classes(teacher.shape[-1], heads["dist"].shape[-1])
        loss_cls = F.cross_entropy(heads["cls"].float(), batch.targets)
        if self.kind == "hard":
            loss_dist = hard_distillation_loss(heads["dist"], teacher)
        else:
            loss_dist = soft_distillation_loss(heads["dist"], teacher, self.tau)
        loss = (1 - self.alpha) * loss_cls + self.alpha * loss_dist
        metrics = {
            "loss": loss.detach(),
            "loss_cls": loss_cls.detach(),
            "loss_dist": loss_dist.detach(),
            "acc": (heads["cls"].detach().argmax(1) == batch.targets.argmax(1)).float().mean() * 100,
            "agree": (heads["dist"].detach().argmax(1) == teacher.argmax(1)).float().mean() * 100,
        }
        return StepOutput(loss, metrics)

    def validate(self, model: nn.Module, context: ValidationContext) -> Validation:
        """Top-1, top-5 and loss of the averaged heads (what the checkpoint predicts), and top-1 of each head
        (token "dist"; with token "cls" the one head)."""
        result = evaluate(
            model, context.source, context.transform, batch_size=context.batch_size, device=context.device,
            precision=context.precision, tta=self.eval_tta, heads=self.token == "dist",
            rank=context.rank, world_size=context.world_size,
        )  # fmt: skip
        values = {"top1": result.top1, "top5": result.top5, "loss": result.loss}
        values.update({f"top1_{name}": head.top1 for name, head in result.heads.items()})
        return Validation(values, result.images)


def move_to(module: nn.Module, device: torch.device) -> None:
    """Move a module to `device` when its parameters are elsewhere (a teacher built in Python on the CPU)."""
    param = next(module.parameters(), None)
    if param is not None and param.device != device:
        module.to(device)


def check_student(model: Model, token: str = "dist") -> None:
    """Token "dist": the student must have DeiT's distillation token (and so its second head); token "cls": it
    must not (its second head would never learn)."""
    distilled = model.has_distillation_head
    name = model.config.name or type(model).__name__
    if token == "dist" and not distilled:
        raise UsageError(
            f"distillation trains DeiT's distillation token, and the student {name} has none: add --distilled "
            "(recipe: model.distilled: true; it needs a class token: --pool token), or distil through the class "
            "head with --distill-token cls"
        )
    if token == "cls" and distilled:
        raise UsageError(
            f"--distill-token cls distils through the class head, but the student {name} has a distillation token "
            "whose head would never learn: drop --distilled, or use --distill-token dist"
        )


def check_classes(teacher_classes: int, data_classes: int) -> None:
    """The teacher must predict the classes of the data."""
    if teacher_classes != data_classes:
        raise UsageError(
            f"the teacher predicts {teacher_classes} classes but the data has {data_classes}: distil from a teacher "
            "trained on the same classes"
        )


def teacher_inputs(prep: Preprocessing, mean: Sequence[float], std: Sequence[float]) -> TeacherInputs:
    """Convert from the student's normalisation to what the teacher's checkpoint records (size and mean/std).

    A checkpoint that records no normalisation (only a format's convention) is assumed to take the student's.
    """
    if not prep.from_metadata:
        log.warning("the teacher records no normalisation; it gets the student's (mean %s, std %s)", mean, std)
        return TeacherInputs(tuple(mean), tuple(std), tuple(mean), tuple(std), prep.img_size)
    return TeacherInputs(tuple(mean), tuple(std), prep.mean, prep.std, prep.img_size)


def load_teacher(source: str, device: torch.device) -> tuple[nn.Module, Preprocessing]:
    """The teacher `source` names, in eval mode on `device`, with its preprocessing: any checkpoint vitkit reads,
    or timm:NAME built by timm."""
    if source.startswith(TIMM_PREFIX):
        return timm_teacher(source.removeprefix(TIMM_PREFIX), device)
    model, prep, _, _ = load_for_inference(source, str(device))
    return model, prep


def timm_teacher(name: str, device: torch.device) -> tuple[nn.Module, Preprocessing]:
    """A pretrained timm model (any architecture, e.g. DeiT's RegNetY-16GF teacher) and its pretrained_cfg."""
    try:
        import timm
    except ImportError:
        raise UsageError(
            f"teacher timm:{name} is built by timm, which is not installed: pip install timm, or give a checkpoint "
            f"vitkit reads (a run directory, checkpoint directory or weights file; hf-hub:timm/{name} for ViT weights)"
        ) from None
    model = timm.create_model(name, pretrained=True).to(device).eval()
    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
    size = cfg.get("input_size", (3, 224, 224))[-1]
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return model, Preprocessing(img_size=size, mean=mean, std=std, source=f"timm pretrained_cfg of {name}")


def teacher_classes(teacher: nn.Module) -> int | None:
    """The teacher's class count when it says (vitkit configs, timm's num_classes), else None."""
    return labels_of(teacher).count


def build_distillation(settings: DistillSettings, context: BuildContext) -> Distillation:
    """The distillation objective of a recipe: load the teacher it names and check it against student and data."""
    if settings.teacher is None:
        raise UsageError(
            "objective 'distill' needs a teacher: add --teacher CKPT (or pass Distillation(teacher=...) to train)"
        )
    model = context.model
    check_student(model, settings.token)
    device = next(model.parameters()).device
    teacher, prep = load_teacher(settings.teacher, device)
    classes = teacher_classes(teacher)
    if classes is not None:
        check_classes(classes, context.num_classes)
    if getattr(teacher, "class_names", None) is not None and getattr(model, "class_names", None) is not None:
        advice = "; its argmax would name the wrong classes: distil from a teacher trained on this data"
        check_class_names(teacher, list(model.class_names), f"the teacher {settings.teacher}", "the data", advice)
    inputs = teacher_inputs(prep, context.mean, context.std)
    log.info("teacher %s: fed at %s", settings.teacher, inputs.describe())
    return Distillation(
        teacher, settings.kind or "hard", settings.alpha, settings.tau, token=settings.token,
        inputs=inputs, eval_tta=context.eval_tta,
    )  # fmt: skip
