"""Masked patch prediction's recipe section and the pre-training recipe, torch-free (the objective is training/mpp.py).

Reading a recipe and building `vitkit pretrain --help` need these and none of the objective's torch code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vitkit.configs import knob
from vitkit.errors import UsageError
from vitkit.training.config import ObjectiveSettings, TrainConfig

MPP_TARGETS = ("mean3bit", "4x4", "l2")


@dataclass
class MPPSettings(ObjectiveSettings):
    """Recipe section `objective.mpp` (flags --mpp-target, --mpp-corrupt)."""

    old_keys: ClassVar[dict[str, str]] = {"mpp_target": "target", "mpp_corrupt": "corrupt"}

    target: str = knob(
        "mean3bit",
        "mpp: what each corrupted patch predicts: mean3bit (its mean colour in 3 bits, 512 classes) | 4x4 (its 4x4 "
        "downsized version in 3-bit colours, 16 x 512 classes) | l2 (regression on its normalised pixels)",
    )
    corrupt: float = knob(0.5, "mpp: share of patch embeddings corrupted (of those 80% [mask], 10% random, 10% kept)")

    def __post_init__(self) -> None:
        if self.target not in MPP_TARGETS:
            raise UsageError(f"objective.mpp.target must be one of {MPP_TARGETS}, got {self.target!r}")
        if not 0 < self.corrupt <= 1:
            raise UsageError(f"objective.mpp.corrupt must be in (0, 1] (the paper corrupts 0.5), got {self.corrupt}")


def pretrain_config(data: str, overrides: dict | None = None) -> TrainConfig:
    """The MPP pre-training recipe on any image folder: the embedded recipe with objective mpp and light augmentation.

    Mixing, erasing and RandAugment change colours or blend images, so the colour targets would no longer
    describe a real image; crops and flips keep them honest. `overrides` are dotted keys (flags).
    """
    config = TrainConfig().replace(
        {
            "data.path": data,
            "objective": {"name": "mpp"},
            "augment": {
                "crop": "rrc",
                "hflip": True,
                "randaugment_n": 0,
                "mixup": 0.0,
                "cutmix": 0.0,
                "random_erasing": 0.0,
                "label_smoothing": 0.0,
            },
        },  # fmt: skip
        origin="pre-training recipe",
    )
    return config.replace(overrides or {}, origin="command line")
