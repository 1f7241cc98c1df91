"""The two configuration objects of the data pipeline: where images come from, and how training perturbs them."""

from __future__ import annotations

from dataclasses import dataclass

from vitkit.configs import Section
from vitkit.errors import UsageError
from vitkit.models.fields import knob

CROPS = ("rrc", "pad", "none")


@dataclass
class DataConfig(Section):
    """Where the images are, the resolution the model sees, and how they are split, normalised and cached."""

    path: str = knob(
        "digits",
        "'digits', an ImageFolder directory, a CIFAR-10/100 python folder or .tar.gz, a packed shard directory "
        "(local or an fsspec URL such as s3://bucket/shards), or hf:PATH_OR_NAME[:SPLIT] (a Hugging Face dataset: "
        "saved with save_to_disk, an imagefolder directory, or a Hub name, streamed)",
    )
    img_size: int = knob(32, "model input resolution")
    eval_img_size: int | None = knob(
        None,
        "validation (and the checkpoint's preprocessing) at this size, above img_size (FixRes, Touvron et al. 2019: "
        "about 1.15x undoes random-resized-crop's zoom); None: img_size",
    )
    val_fraction: float = knob(0.1, "held-out share (seeded, stratified) when the data has no val/ split")
    seed: int = knob(0, "seed of the train/val split")
    mean: tuple[float, ...] = knob((0.5, 0.5, 0.5), "normalisation mean (one value per image channel)")
    std: tuple[float, ...] = knob((0.5, 0.5, 0.5), "normalisation std (one value per image channel)")
    cache_dir: str | None = knob(None, "decoded-image cache (default ~/.cache/vitkit; env VITKIT_CACHE)")
    num_workers: int = knob(2, "decode worker processes (first decode of an in-memory dataset, and streaming)")
    max_memory_gb: float = knob(4.0, "hold decoded images in memory when they fit under this")
    limit_per_class: int | None = knob(None, "keep only the first N images of each class per split (quick experiments)")
    train_fraction: float = knob(
        1.0, "keep a seeded, stratified share of each class's training images (0.1: 10% of the labels); val stays whole"
    )
    train_split: str | None = knob(None, "a pre-split folder's training sub-folder (default train/)")
    val_split: str | None = knob(
        None, "a pre-split folder's held-out sub-folder (default: the one of val/, valid/, validation/, test/ it has)"
    )
    image_column: str | None = knob(None, "hf: datasets: the image column (default: the one Image feature)")
    label_column: str | None = knob(
        None, "hf: datasets: the label column (default: the one ClassLabel feature, else an int column named label)"
    )
    shard_window: int = knob(
        4, "packed shards (vitkit data pack): samples are shuffled within windows of this many shards"
    )

    @property
    def decode_size(self) -> int:
        """The largest resolution the run reads (training or evaluation): images are stored for it."""
        return max(self.img_size, self.eval_img_size or 0)

    def __post_init__(self) -> None:
        if self.img_size <= 0:
            raise UsageError(f"img_size must be positive, got {self.img_size}")
        if self.eval_img_size is not None and self.eval_img_size <= 0:
            raise UsageError(f"eval_img_size must be positive or None, got {self.eval_img_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction}; 0.1 holds out 10%")
        if not self.mean or len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise UsageError(
                f"mean and std need one value per image channel each, std > 0, got mean={self.mean} std={self.std}"
            )
        if self.limit_per_class is not None and self.limit_per_class <= 0:
            raise UsageError(f"limit_per_class must be positive or None, got {self.limit_per_class}")
        if self.shard_window < 1:
            raise UsageError(f"shard_window must be at least 1 shard, got {self.shard_window}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise UsageError(f"train_fraction must be in (0, 1], got {self.train_fraction}; 0.1 keeps 10% of labels")


@dataclass
class AugmentConfig(Section):
    """Training-time augmentation (DeiT-style recipe by default: RRC, flip, RandAugment, Mixup/CutMix, erasing)."""

    crop: str = knob("rrc", "rrc (random resized crop) | pad (pad and crop) | none")
    rrc_scale: tuple[float, float] = knob((0.08, 1.0), "random-resized-crop area range (2 values)")
    rrc_ratio: tuple[float, float] = knob((3 / 4, 4 / 3), "random-resized-crop aspect-ratio range (2 values)")
    pad: int = knob(4, "pixels of padding for --crop pad")
    hflip: bool = knob(True, "random horizontal flips")
    randaugment_n: int = knob(2, "RandAugment operations per image (0 disables)")
    randaugment_m: int = knob(9, "RandAugment magnitude on the 0..30 scale of Cubuk et al. 2020")
    mixup: float = knob(0.8, "Mixup Beta alpha (0 disables)")
    cutmix: float = knob(1.0, "CutMix Beta alpha (0 disables)")
    mix_prob: float = knob(1.0, "probability of mixing a batch")
    random_erasing: float = knob(0.25, "random-erasing probability (0 disables)")
    label_smoothing: float = knob(0.1, "label smoothing")
    repeats: int = knob(
        1,
        "repeated augmentation (DeiT; Hoffer et al. 2020): each drawn image appears this many times in its batch, "
        "each copy augmented on its own; an epoch keeps its length (1 disables)",
    )

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise UsageError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if not 0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1:
            raise UsageError(f"rrc_scale must satisfy 0 < low <= high <= 1, got {self.rrc_scale}")
        if self.randaugment_n < 0 or not 0 <= self.randaugment_m <= 30:
            raise UsageError(
                f"RandAugment needs n >= 0 and 0 <= m <= 30, got n={self.randaugment_n}, m={self.randaugment_m}"
            )
        if self.mixup < 0 or self.cutmix < 0:
            raise UsageError(f"mixup and cutmix are Beta alphas >= 0 (0 disables), got {self.mixup}, {self.cutmix}")
        if self.repeats < 1:
            raise UsageError(f"repeats must be >= 1 (1: each image once per epoch), got {self.repeats}")
        for name in ("mix_prob", "random_erasing", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"{name} must be in [0, 1], got {value}")
