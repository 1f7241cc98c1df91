"""The two configuration objects of the data pipeline: where images come from, and how training perturbs them."""

from __future__ import annotations

from dataclasses import dataclass

CROPS = ("rrc", "pad", "none")


@dataclass
class DataConfig:
    """Where the images are, the resolution the model sees, and how they are split, normalised and cached."""

    path: str = "digits"  # ImageFolder dir | CIFAR-10/100 python-pickle folder or .tar.gz | "digits"
    img_size: int = 32  # model input resolution
    val_fraction: float = 0.1  # seeded stratified split when the folder has no train/ and val/ sub-folders
    seed: int = 0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    cache_dir: str | None = None  # default: ~/.cache/vitkit (env VITKIT_CACHE overrides)
    num_workers: int = 2  # decode workers (first decode of an in-memory dataset, and streaming)
    max_memory_gb: float = 4.0  # decode into memory when the decoded dataset fits under this
    limit_per_class: int | None = None  # keep the first N files of each class per split (tests, benchmarks)

    def __post_init__(self) -> None:
        if self.img_size <= 0:
            raise ValueError(f"img_size must be positive, got {self.img_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}; 0.1 holds out 10%")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each with std > 0, got mean={self.mean} std={self.std}")
        if self.limit_per_class is not None and self.limit_per_class <= 0:
            raise ValueError(f"limit_per_class must be positive or None, got {self.limit_per_class}")


@dataclass
class AugmentConfig:
    """Training-time augmentation (DeiT-style recipe by default: RRC, flip, RandAugment, Mixup/CutMix, erasing)."""

    crop: str = "rrc"  # "rrc" random-resized-crop | "pad" pad-and-crop | "none"
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    pad: int = 4
    hflip: bool = True
    randaugment_n: int = 2  # 0 disables RandAugment
    randaugment_m: int = 9  # magnitude on the 0..30 scale of Cubuk et al. 2020
    mixup: float = 0.8  # Beta alpha; 0 disables
    cutmix: float = 1.0  # Beta alpha; 0 disables
    mix_prob: float = 1.0
    random_erasing: float = 0.25  # probability; 0 disables
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if not 0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1:
            raise ValueError(f"rrc_scale must satisfy 0 < low <= high <= 1, got {self.rrc_scale}")
        if self.randaugment_n < 0 or not 0 <= self.randaugment_m <= 30:
            raise ValueError(
                f"RandAugment needs n >= 0 and 0 <= m <= 30, got n={self.randaugment_n}, m={self.randaugment_m}"
            )
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError(f"mixup and cutmix are Beta alphas >= 0 (0 disables), got {self.mixup}, {self.cutmix}")
        for name in ("mix_prob", "random_erasing", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
