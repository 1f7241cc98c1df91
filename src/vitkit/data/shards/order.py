"""The global sample order of a sharded source: a pure function of (seed, epoch), windowed over shards.

Tar shards are read well in long runs, not one random sample at a time across the whole dataset, so an
epoch's order is drawn in two levels (from one private generator seeded by a hash of (seed, epoch)):

1. the shards are permuted;
2. consecutive groups of `window` shards of that permutation are one window each, and the samples of a
   window are permuted among themselves. The epoch reads the windows one after the other.

At any moment the readers touch at most `window` shards (what the read-ahead and the page cache have to
hold), and the packer shuffles samples across shards once (`vitkit data pack --seed`), so every shard, and
so every window, holds a mix of all classes.

How the order is split, and why it is ours rather than webdataset's: the global batch b is positions
b*B .. (b+1)*B - 1 of the order; rank r of N reads its contiguous share r*B/N .. (r+1)*B/N - 1 of every
batch (what `TrainAugment`'s per-rank slicing assumes), and the rank's DataLoader workers take its batches
round-robin. So every sample is read once per epoch by exactly one worker of one rank, every rank has the same
number of batches (the tail of N mod B samples is dropped in training, a different one every epoch), and a
position in the epoch is one number, the global offset b*B: a checkpoint records (epoch, offset, seed) and a
run resumes exactly there on any world size with the same global batch. webdataset's own pipeline
(`shardshuffle`, `split_by_node`, `split_by_worker`, a shuffle buffer) splits *shards* over ranks and workers,
so ranks get unequal sample counts when the shards do not divide evenly, and its buffer order depends on
the worker count and cannot be restarted mid-epoch; it gives no exact resume. vitkit therefore uses
webdataset to write the tar format (`vitkit.data.shards.pack`) and reads samples itself by the byte
offsets of its index (`vitkit.data.shards.source`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from vitkit.errors import UsageError


def order_generator(seed: int, epoch: int) -> torch.Generator:
    """The private generator of one epoch's shard order (never reads or advances the global RNG)."""
    digest = hashlib.sha256(f"vitkit-shard-order:{seed}:{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def window_order(shard_of: np.ndarray | torch.Tensor, *, seed: int, epoch: int, window: int) -> torch.Tensor:
    """The epoch's order of the rows of a sample table whose row i lies in shard `shard_of[i]` (int64 (N,)).

    Shards permuted, then samples permuted within each window of `window` consecutive shards of that
    permutation. The same (table, seed, epoch, window) give the same order on every process.
    """
    if window < 1:
        raise UsageError(f"the shard window must be at least 1 shard, got {window}")
    shard_of = torch.as_tensor(np.asarray(shard_of), dtype=torch.int64)
    if shard_of.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    rows = torch.argsort(shard_of, stable=True)  # rows grouped by shard, table order inside each
    _, counts = torch.unique_consecutive(shard_of[rows], return_counts=True)
    starts = (torch.cumsum(counts, 0) - counts).tolist()
    counts = counts.tolist()
    generator = order_generator(seed, epoch)
    shards = torch.randperm(len(counts), generator=generator).tolist()
    pieces = []
    for first in range(0, len(shards), window):
        members = torch.cat([rows[starts[j] : starts[j] + counts[j]] for j in shards[first : first + window]])
        pieces.append(members[torch.randperm(len(members), generator=generator)])
    return torch.cat(pieces)
