"""Data: datasets (ImageFolder, CIFAR-10/100, digits), the decode cache, resumable loaders, batched augmentation."""

from typing import TYPE_CHECKING

from vitkit.lazy import lazy_package

if TYPE_CHECKING:
    from vitkit.data.augment import EvalTransform, RandAugment, TrainAugment, smooth_one_hot
    from vitkit.data.config import AugmentConfig, DataConfig
    from vitkit.data.datasets import load_dataset
    from vitkit.data.decode import BadImageError, SkippedFile, decode_image, load_images
    from vitkit.data.loader import BatchLoader, make_loader, num_batches
    from vitkit.data.normalize import Normalize
    from vitkit.data.sources import DatasetSplits, FileSource, ImageSource, TensorSource, epoch_order

__all__ = [
    "AugmentConfig",
    "BadImageError",
    "BatchLoader",
    "DataConfig",
    "DatasetSplits",
    "EvalTransform",
    "FileSource",
    "ImageSource",
    "Normalize",
    "RandAugment",
    "SkippedFile",
    "TensorSource",
    "TrainAugment",
    "decode_image",
    "epoch_order",
    "load_dataset",
    "load_images",
    "make_loader",
    "num_batches",
    "smooth_one_hot",
]

lazy_package(
    __name__,
    {
        "vitkit.data.augment": ("EvalTransform", "RandAugment", "TrainAugment", "smooth_one_hot"),
        "vitkit.data.config": ("AugmentConfig", "DataConfig"),
        "vitkit.data.datasets": ("load_dataset",),
        "vitkit.data.decode": ("BadImageError", "SkippedFile", "decode_image", "load_images"),
        "vitkit.data.loader": ("BatchLoader", "make_loader", "num_batches"),
        "vitkit.data.normalize": ("Normalize",),
        "vitkit.data.sources": ("DatasetSplits", "FileSource", "ImageSource", "TensorSource", "epoch_order"),
    },
)
