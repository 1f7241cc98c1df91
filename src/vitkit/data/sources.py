"""Labelled image sources: held in memory as one uint8 tensor, or streamed from files by decode workers."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from vitkit.data.decode import BadImageError, SkippedFile, decode_image, pil_to_uint8, to_square
from vitkit.errors import UsageError


class ImageSource:
    """Labelled images stored at one square size `size` (S); subclasses hold them in memory or stream them."""

    labels: torch.Tensor  # int64 (N,)
    class_names: list[str]
    size: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """How many classes the labels index into."""
        return len(self.class_names)

    @property
    def in_memory(self) -> bool:
        """True when the images are one uint8 tensor (the loader indexes it directly)."""
        return False


class TensorSource(ImageSource):
    """Images already decoded into a uint8 (N, 3, S, S) tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> None:
        if (
            images.dtype != torch.uint8
            or images.ndim != 4
            or images.shape[1] != 3
            or images.shape[2] != images.shape[3]
        ):
            raise UsageError(f"images must be uint8 (N, 3, S, S), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise UsageError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.class_names = list(class_names)
        self.size = int(images.shape[-1])

    @property
    def in_memory(self) -> bool:
        """True: the loader indexes `images` directly."""
        return True


class FileSource(ImageSource, Dataset):
    """Image files decoded on demand (in DataLoader workers) to uint8 (3, S, S), shorter side to S and centre-cropped.

    Files were checked at their header when the dataset was indexed; one that still fails to decode (a
    truncated body) is replaced by the next decodable file in the list, with a warning naming it, so a
    batch keeps its shape and the epoch its length.
    """

    def __init__(
        self, paths: Sequence[str], labels: torch.Tensor, class_names: Sequence[str], size: int, num_workers: int = 2
    ) -> None:
        if len(paths) != labels.shape[0]:
            raise UsageError(f"{len(paths)} paths but {labels.shape[0]} labels")
        self.paths = list(paths)
        self.labels = labels.to(torch.int64)
        self.class_names = list(class_names)
        self.size = size
        self.num_workers = num_workers  # the loader's default for decode worker processes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for step in range(len(self.paths)):
            candidate = (index + step) % len(self.paths)
            try:
                image = to_square(decode_image(self.paths[candidate]), self.size)
            except BadImageError as error:
                warnings.warn(f"skipped {self.paths[candidate]} while streaming: {error}", stacklevel=2)
                continue
            return pil_to_uint8(image), int(self.labels[candidate])
        raise UsageError(f"none of the {len(self.paths)} files of this source could be decoded")


@dataclass
class DatasetSplits:
    """The training and validation sources of one dataset, its class names, and the files left out."""

    train: ImageSource
    val: ImageSource
    class_names: list[str]
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """How many classes the labels index into."""
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        """The stored size S of both splits (the loader yields (B, 3, S, S) uint8)."""
        return self.train.size

    def whole(self) -> ImageSource:
        """Every image of the dataset as one source: the train split, then the val split."""
        return concat_sources(self.train, self.val)


def concat_sources(first: ImageSource, second: ImageSource) -> ImageSource:
    """One source holding the images of `first`, then those of `second` (same classes and stored size)."""
    if list(first.class_names) != list(second.class_names) or first.size != second.size:
        raise UsageError(
            f"cannot join sources of different classes or sizes ({first.num_classes} classes at {first.size}px "
            f"and {second.num_classes} at {second.size}px); they must come from one dataset"
        )
    labels = torch.cat([first.labels, second.labels])
    if hasattr(first, "concat") and type(first) is type(second):  # a source that joins itself (ShardSource)
        return first.concat(second)
    if isinstance(first, TensorSource) and isinstance(second, TensorSource):
        return TensorSource(torch.cat([first.images, second.images]), labels, first.class_names)
    if isinstance(first, FileSource) and isinstance(second, FileSource):
        return FileSource(first.paths + second.paths, labels, first.class_names, first.size, first.num_workers)
    raise UsageError(f"cannot join a {type(first).__name__} and a {type(second).__name__}; load them the same way")


def subset_source(source: ImageSource, rows: torch.Tensor) -> ImageSource:
    """The images of `source` at `rows` (an int64 index tensor), in that order, held the same way."""
    if isinstance(source, TensorSource):
        return TensorSource(source.images[rows], source.labels[rows], source.class_names)
    if hasattr(source, "subset"):  # a source that subsets itself (ShardSource)
        return source.subset(rows)
    if isinstance(source, FileSource):
        paths = [source.paths[i] for i in rows.tolist()]
        return FileSource(paths, source.labels[rows], source.class_names, source.size, source.num_workers)
    raise UsageError(f"cannot take a subset of a {type(source).__name__}")
