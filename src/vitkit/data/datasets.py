"""`load_dataset`: one entry point that recognises ImageFolder, CIFAR-10/100, packed shards, Hugging Face datasets and
scikit-learn's digits."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from vitkit.data.cifar import find_cifar, load_cifar
from vitkit.data.config import DataConfig
from vitkit.data.decode import report_skipped
from vitkit.data.hf import is_hf_path, load_hf
from vitkit.data.imagefolder import load_imagefolder, stratified_draw, stratified_split
from vitkit.data.shards.format import shard_root
from vitkit.data.shards.source import load_shards
from vitkit.data.sources import DatasetSplits, TensorSource
from vitkit.errors import UsageError

logger = logging.getLogger("vitkit.data")


def load_dataset(config: DataConfig) -> DatasetSplits:
    """Load the dataset `config.path` names: "digits", a CIFAR pickle folder or .tar.gz, packed shards, `hf:...`, or an
    ImageFolder.

    With `config.train_fraction` < 1 only that seeded, stratified share of each class's training images is
    kept (a label-scarce experiment); the val split stays whole.
    """
    splits = _load_splits(config)
    if config.train_fraction < 1.0:
        full = len(splits.train)
        fraction = config.train_fraction
        kept, _ = stratified_draw(splits.train.labels, lambda n: kept_count(n, fraction), config.seed)
        splits.train = splits.train.subset(kept)
        logger.info("train_fraction %g: %d of %d training images kept", config.train_fraction, len(splits.train), full)
    return splits


def kept_count(class_size: int, train_fraction: float) -> int:
    """Training images of a class of `class_size` that `train_fraction` keeps: round(n * fraction), at least one."""
    return max(1, round(class_size * train_fraction))


def _load_splits(config: DataConfig) -> DatasetSplits:
    if config.path == "digits":
        return load_digits(config)
    if is_hf_path(config.path):  # hf:PATH_OR_NAME[:SPLIT]: a Hugging Face dataset
        return load_hf(config)
    if shard_root(config.path) is not None:  # a directory (or URL) of packed shards: `vitkit data pack`
        return load_shards(config, shard_root(config.path))
    path = Path(config.path).expanduser()
    if not path.exists():
        raise UsageError(
            f"dataset path {path} does not exist; give an ImageFolder directory, a CIFAR-10/100 python folder "
            "(cifar-10-batches-py) or its .tar.gz, or 'digits'"
        )
    cifar = find_cifar(path)
    if cifar is not None:
        return load_cifar(*cifar, limit_per_class=config.limit_per_class)
    if not path.is_dir():
        raise UsageError(f"{path} is a file but not a CIFAR-10/100 python-pickle archive; give a folder of images")
    splits, from_cache = load_imagefolder(path, config)
    logger.info(
        "%s: %d train / %d val images at %dpx (%s)",
        path,
        len(splits.train),
        len(splits.val),
        splits.image_size,
        "cache hit" if from_cache else "decoded",
    )
    report_skipped(splits.skipped, str(path))
    return splits


def load_digits(config: DataConfig) -> DatasetSplits:
    """scikit-learn's 1,797 real 8x8 handwritten digits (16 grey levels) as RGB uint8 at img_size, split by seed."""
    from sklearn.datasets import load_digits as sklearn_digits  # imported here: scikit-learn is slow to import

    digits = sklearn_digits()
    gray = torch.from_numpy(digits.images).float().mul(255.0 / 16.0)  # 0..16 -> 0..255
    images = F.interpolate(gray[:, None], size=(config.img_size, config.img_size), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target).to(torch.int64)
    if config.limit_per_class is not None:
        keep = torch.cat([torch.nonzero(labels == c).flatten()[: config.limit_per_class] for c in range(10)]).sort()
        images, labels = images[keep.values], labels[keep.values]
    class_names = [str(d) for d in range(10)]
    train, val = stratified_split(labels, config.val_fraction, config.seed)
    return DatasetSplits(
        TensorSource(images[train], labels[train], class_names),
        TensorSource(images[val], labels[val], class_names),
        class_names,
        [],
    )
