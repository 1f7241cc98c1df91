"""Batches of uint8 images in an order that is a pure function of (seed, epoch), so an epoch can resume mid-way."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from vitkit.data.sources import ImageSource, TensorSource
from vitkit.errors import UsageError

PREFETCH_BATCHES = 4  # per streaming worker: enough decoded batches queued that the training loop never waits


def num_batches(source: ImageSource | int, batch_size: int, drop_last: bool = False) -> int:
    """Batches in one epoch of `source` (or of that many images)."""
    n = source if isinstance(source, int) else len(source)
    if batch_size <= 0:
        raise UsageError(f"batch_size must be positive, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


class BatchLoader:
    """One epoch of (uint8 images (B, 3, S, S), int64 labels (B,)) on `device`, from batch `start_batch` onwards.

    `len()` is the number of batches of the whole epoch, so a schedule counts steps the same way whether
    or not the epoch was resumed; iteration yields batches start_batch .. len-1, exactly those an
    uninterrupted epoch would have yielded there.
    """

    def __init__(
        self,
        source: ImageSource,
        batch_size: int,
        order: torch.Tensor,
        start_batch: int,
        drop_last: bool,
        device: torch.device,
        num_workers: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise UsageError(f"batch size {batch_size} does not divide evenly over {world_size} processes")
        self.source, self.batch_size, self.order = source, batch_size, order
        self.rank, self.world_size = rank, world_size
        self.drop_last, self.device, self.num_workers = drop_last, device, num_workers
        total = num_batches(len(order), batch_size, drop_last)
        if not 0 <= start_batch <= total:
            raise UsageError(f"start_batch {start_batch} is outside this epoch's {total} batches")
        self.start_batch = start_batch

    def __len__(self) -> int:
        return num_batches(len(self.order), self.batch_size, self.drop_last)

    def batch_indices(self) -> list[torch.Tensor]:
        """The index tensor of every batch still to come (this rank's contiguous share of each global batch).

        Contiguous shares are what TrainAugment's rank slicing assumes: rank r holds images r * B/N .. (r+1) * B/N - 1.
        """
        size, share = self.batch_size, self.batch_size // self.world_size
        batches = [self.order[b * size : (b + 1) * size] for b in range(self.start_batch, len(self))]
        if self.world_size == 1:
            return batches
        return [b[self.rank * share : (self.rank + 1) * share] for b in batches]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.source, TensorSource):
            return self._from_memory()
        return self._from_workers()

    def _from_memory(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Pinned host memory makes the host-to-device copy asynchronous, so the next batch is gathered while
        # the device is still busy with this one.
        cuda = self.device.type == "cuda"
        images, labels = self.source.images, self.source.labels
        for indices in self.batch_indices():
            x, y = images.index_select(0, indices), labels.index_select(0, indices)
            if cuda:
                x, y = x.pin_memory(), y.pin_memory()
            yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)

    def _from_workers(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cuda = self.device.type == "cuda"
        loader = DataLoader(
            self.source,
            batch_sampler=[b.tolist() for b in self.batch_indices()],
            num_workers=self.num_workers,
            collate_fn=self.source.collate,  # a streaming source's batches may also list the samples it replaced
            pin_memory=cuda,
            prefetch_factor=PREFETCH_BATCHES if self.num_workers > 0 else None,
        )
        for x, y, *replaced in loader:
            if replaced:
                self.source.note_skipped(replaced[0])
            yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)


def make_loader(
    source: ImageSource,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    drop_last: bool = False,
    device: str | torch.device = "cpu",
    num_workers: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    repeats: int = 1,
) -> BatchLoader:
    """The batches of one epoch; order depends only on (seed, epoch), so resuming at start_batch repeats nothing.

    `repeats` > 1 (repeated augmentation) trains each of the first len / repeats images of the shuffled order
    `repeats` times in a row (`repeated_order`), so the copies share a batch and are augmented differently.

    In-memory sources are indexed directly; streaming sources decode in `num_workers` processes (default:
    the source's own setting, DataConfig.num_workers) with prefetching. With `world_size` > 1 each rank gets
    its contiguous share of every (global) batch of the same order.
    """
    if not isinstance(source, ImageSource):
        raise TypeError(f"make_loader needs an ImageSource (vitkit.data.sources), got {type(source).__name__}")
    workers = source.num_workers if num_workers is None else num_workers
    order = source.epoch_order(seed, epoch) if shuffle else torch.arange(len(source))
    if repeats > 1:
        order = repeated_order(order, repeats)
    return BatchLoader(
        source, batch_size, order, start_batch, drop_last, torch.device(device), workers, rank, world_size
    )


def repeated_order(order: torch.Tensor, repeats: int) -> torch.Tensor:
    """Each of the first ceil(len / repeats) entries of `order` `repeats` times in a row, cut to len(order): an
    epoch of the same length that sees 1/repeats of the images, every one several times (DeiT's RASampler)."""
    drawn = order[: -(-len(order) // repeats)]
    return drawn.repeat_interleave(repeats)[: len(order)]


def rank_rows(n: int, rank: int, world_size: int) -> tuple[torch.Tensor, int]:
    """Rank `rank`'s contiguous part of 0..n-1 for evaluation, padded to ceil(n / world_size) rows, and how many of
    them are real (the rest repeat the last row and must not be counted).

    Every row is real on exactly one rank, and every rank has the same number of rows, so the same number of
    batches (FSDP needs every rank in each forward).
    """
    share = -(-n // world_size)
    start, stop = min(rank * share, n), min((rank + 1) * share, n)
    rows = torch.arange(start, stop)
    if len(rows) < share:
        rows = torch.cat([rows, torch.full((share - len(rows),), max(n - 1, 0), dtype=torch.int64)])
    return rows, stop - start


def eval_loader(
    source: ImageSource, batch_size: int, *, rank: int, world_size: int, device: str | torch.device = "cpu"
) -> tuple[BatchLoader, int]:
    """The loader of rank `rank`'s part of `source` in order (`rank_rows`) and how many of its rows are real."""
    rows, real = rank_rows(len(source), rank, world_size)
    return BatchLoader(source, batch_size, rows, 0, False, torch.device(device), source.num_workers), real
