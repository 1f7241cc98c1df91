"""Labelled image sources: held in memory as one uint8 tensor, or streamed from files by decode workers."""

from __future__ import annotations

import abc
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from vitkit.data.decode import BadImageError, SkippedFile, decode_image, pil_to_uint8, to_square
from vitkit.errors import UsageError


class ImageSource(abc.ABC):
    """What every labelled image source offers the loader, the trainer and evaluation, so no caller probes one.

    Images are stored at one square size `size` (S) and come out as uint8 (3, S, S). Subclasses hold them in
    memory (`TensorSource`) or decode them in DataLoader workers (files, packed shards, Hugging Face datasets):

        labels, class_names, size              the labels (int64, N), their names, the stored side S
        num_workers                            decode worker processes the loader starts (0: in memory)
        digest                                 the identity of packed data a resumed run must read again, or ""
        epoch_order(seed, epoch)               the training order of one epoch (a pure function of both)
        collate(items)                         a worker batch -> (images, labels[, samples replaced])
        note_skipped(replaced)                 record samples a worker replaced (in the main process)
        describe(batch_size, world_size)       a log line on how an epoch is read, or None
        subset(rows), concat(other)            the same kind of source over other rows (or refused, saying why)
    """

    labels: torch.Tensor  # int64 (N,)
    class_names: list[str]
    size: int
    num_workers: int = 0
    digest: str = ""

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

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """The index order of training epoch `epoch` (default: a permutation seeded by (seed, epoch) alone)."""
        return epoch_order(len(self), shuffle=True, seed=seed, epoch=epoch)

    @staticmethod
    def collate(items: list[Any]) -> Any:
        """A batch of worker items: (images (B, 3, S, S), labels (B,)), plus the samples replaced in it if any."""
        return default_collate(items)

    def note_skipped(self, skipped: list[SkippedFile]) -> None:
        """Record samples a worker replaced with the next decodable one (default: a source that replaces none)."""
        return None

    def describe(self, batch_size: int, world_size: int) -> str | None:
        """One log line on how an epoch of this source is read and shared, or None when there is nothing to say."""
        return None

    @abc.abstractmethod
    def subset(self, rows: torch.Tensor) -> ImageSource:
        """The images at `rows` (an int64 index tensor), in that order, held the same way."""

    @abc.abstractmethod
    def concat(self, other: Any) -> ImageSource:
        """These images, then those of `other` (a source of the same kind, classes and size)."""


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int) -> torch.Tensor:
    """The index order of one epoch: a permutation seeded by (seed, epoch) alone, or 0..n-1 without shuffling."""
    if not shuffle:
        return torch.arange(n)
    # A private generator: the order never depends on, or disturbs, the global RNG (dropout draws from it).
    # Its seed hashes (seed, epoch) to 32 bits, all torch's CPU generator uses (seed * 2**32 + epoch would
    # drop the seed).
    digest = hashlib.sha256(f"vitkit-epoch-order:{seed}:{epoch}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:4], "little"))
    return torch.randperm(n, generator=generator)


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

    def subset(self, rows: torch.Tensor) -> TensorSource:
        """The images at `rows`, in that order."""
        return TensorSource(self.images[rows], self.labels[rows], self.class_names)

    def concat(self, other: TensorSource) -> TensorSource:
        """These images, then those of `other`."""
        labels = torch.cat([self.labels, other.labels])
        return TensorSource(torch.cat([self.images, other.images]), labels, self.class_names)


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
                image = to_square(decode_image(self.paths[candidate], draft=self.size), self.size)
            except BadImageError as error:
                warnings.warn(f"skipped {self.paths[candidate]} while streaming: {error}", stacklevel=2)
                continue
            return pil_to_uint8(image), int(self.labels[candidate])
        raise UsageError(f"none of the {len(self.paths)} files of this source could be decoded")

    def subset(self, rows: torch.Tensor) -> FileSource:
        """The files at `rows`, in that order."""
        paths = [self.paths[i] for i in rows.tolist()]
        return FileSource(paths, self.labels[rows], self.class_names, self.size, self.num_workers)

    def concat(self, other: FileSource) -> FileSource:
        """These files, then those of `other`."""
        labels = torch.cat([self.labels, other.labels])
        return FileSource(self.paths + other.paths, labels, self.class_names, self.size, self.num_workers)


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
    """One source holding the images of `first`, then those of `second` (same kind, classes and stored size)."""
    if list(first.class_names) != list(second.class_names) or first.size != second.size:
        raise UsageError(
            f"cannot join sources of different classes or sizes ({first.num_classes} classes at {first.size}px "
            f"and {second.num_classes} at {second.size}px); they must come from one dataset"
        )
    if type(first) is not type(second):
        raise UsageError(f"cannot join a {type(first).__name__} and a {type(second).__name__}; load them the same way")
    return first.concat(second)
