"""Data: datasets (ImageFolder, CIFAR-10/100, digits), the decode cache, resumable loaders, batched augmentation."""

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
