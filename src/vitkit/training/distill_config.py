"""DeiT distillation's recipe section, torch-free (the objective is training/distill.py).

Reading a recipe (a teacher selects distillation; a fresh student gets the distillation token) and building
`vitkit train --help` need these and none of the objective's torch code.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import ClassVar

from vitkit.configs import knob
from vitkit.errors import UsageError
from vitkit.models.registry import model_config
from vitkit.training.config import ObjectiveSettings, TrainConfig

log = logging.getLogger("vitkit.training")

DISTILL_KINDS = ("hard", "soft")  # DeiT (Touvron et al. 2021) Sec. 5
TOKENS = ("dist", "cls")  # through the distillation token and its head (DeiT) | the class head alone (Table 3)


@dataclass
class DistillSettings(ObjectiveSettings):
    """Recipe section `objective.distill` (flags --teacher, --distill, --distill-alpha, --distill-tau, --distill-token).

    A teacher selects the objective: `--teacher RUN` alone trains with distillation.
    """

    old_keys: ClassVar[dict[str, str]] = {
        "teacher": "teacher", "distill": "kind", "distill_alpha": "alpha", "distill_tau": "tau",
    }  # fmt: skip

    teacher: str | None = knob(
        None,
        "distil from this teacher (DeiT): a run directory, checkpoint directory or weights file of any format "
        "`vitkit.load` reads (ViTs, ConvNets), or timm:NAME (built by timm); implies --objective distill",
        flag="--teacher",
    )
    kind: str | None = knob(
        None,
        "distillation: hard (the student learns the teacher's argmax; the default with --teacher) | "
        "soft (KL to the teacher's softened probabilities)",
        flag="--distill",
    )
    alpha: float = knob(0.5, "weight of the distillation term; the class head's cross-entropy gets 1 - alpha")
    tau: float = knob(1.0, "soft distillation temperature")
    token: str = knob(
        "dist",
        "dist: DeiT's distillation token and head learn from the teacher (a fresh student gets the token) | cls: the "
        "class head alone learns from both labels and teacher (DeiT Table 3's usual distillation; no token)",
    )

    def __post_init__(self) -> None:
        if self.kind is not None and self.teacher is None:
            raise UsageError(
                f"objective.distill.kind {self.kind!r} needs a teacher to distil from: add --teacher CKPT "
                "(a run directory or checkpoint of the teacher)"
            )
        if self.kind not in (None, *DISTILL_KINDS):
            raise UsageError(f"objective.distill.kind must be one of {DISTILL_KINDS}, got {self.kind!r}")
        if not 0 <= self.alpha <= 1 or self.tau <= 0:
            raise UsageError(
                "objective.distill.alpha must be in [0, 1] and objective.distill.tau positive, got "
                f"{self.alpha}, {self.tau}"
            )
        if self.token not in TOKENS:
            raise UsageError(f"objective.distill.token must be one of {TOKENS}, got {self.token!r}")

    def selects(self) -> bool:
        """A teacher means distillation; no second flag to forget."""
        return self.teacher is not None

    def check_objective(self, name: str) -> None:
        """A teacher under another objective would be ignored: refuse it."""
        if self.teacher is not None and name != "distill":
            raise UsageError(f"objective.distill.teacher is for objective 'distill', not {name!r}; drop --teacher")

    def complete(self, config: TrainConfig) -> TrainConfig:
        """A student built from scratch gets DeiT's distillation token when distilling through it (token dist)."""
        model = config.model
        if self.token != "dist" or model.pretrained or "distilled" in model.overrides:
            return config
        pool = getattr(model_config(model.name, **model.overrides), "pool", "token")
        if pool != "token":
            raise UsageError(
                f"distillation through DeiT's distillation token needs a class token beside it, and the student "
                f"{model.name} pools with {pool!r}: add --pool token (recipe: model.pool: token), or distil through "
                "the class head with --distill-token cls"
            )
        log.info(
            "distillation: the student %s is built from scratch, so it gets DeiT's distillation token "
            "(model.distilled: true; --distill-token cls distils through the class head instead)",
            model.name,
        )
        overrides = {**model.overrides, "distilled": True}
        return dataclasses.replace(config, model=dataclasses.replace(model, overrides=overrides))
