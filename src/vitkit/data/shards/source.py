"""`ShardSource`: the samples of packed tar shards, read by byte offset and decoded in DataLoader workers.

It is an `ImageSource` like a streamed folder (`FileSource`): the loader (`vitkit.data.loader`) asks it for an
epoch order (`epoch_order`: windowed over shards, `vitkit.data.shards.order`), hands each rank its contiguous
share of every global batch and each DataLoader worker whole batches, and the worker reads the batch's
samples (`__getitems__`) and decodes them exactly as a folder's files are decoded (`vitkit.data.decode`), to
the same stored size. Local shards are read with `os.pread` after asking the kernel to read each shard ahead
(`posix_fadvise(WILLNEED)` when a worker first touches it); a URL's samples are fetched with one
`fsspec` `cat_ranges` call per batch (concurrent range requests on s3/http/gcs).

A sample that does not decode is replaced by the next decodable sample of the table (so batches keep their
shape and the order stays a function of (seed, epoch)); it is counted, logged and listed in the run's
`skipped_files`, never fatal. A shard that is missing or shorter than its index says is an error naming it.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vitkit.data.config import DataConfig
from vitkit.data.decode import BadImageError, SkippedFile, decode_bytes, pil_to_uint8, report_skipped, to_square
from vitkit.data.imagefolder import stored_size, stratified_split
from vitkit.data.shards.format import ShardInfo, filesystem, is_url, join, read_index
from vitkit.data.shards.order import window_order
from vitkit.data.sources import DatasetSplits, ImageSource
from vitkit.errors import MissingPathError, UsageError

logger = logging.getLogger("vitkit.data")

MAX_OPEN_SHARDS = 64  # file descriptors each worker keeps open (least recently used closed first)
Table = dict[str, np.ndarray]


class ShardSource(ImageSource, Dataset):
    """Samples of tar shards: row i of `table` is a sample of shard `shards[table["shard"][i]]` under `root`."""

    def __init__(
        self,
        root: str,
        shards: Sequence[ShardInfo],
        table: Table,
        class_names: Sequence[str],
        size: int,
        *,
        num_workers: int = 2,
        window: int = 4,
        digest: str = "",
        skipped: list[SkippedFile] | None = None,
    ) -> None:
        self.root, self.shards, self.table = root, list(shards), table
        self.labels = torch.from_numpy(table["label"].astype(np.int64))
        self.class_names = list(class_names)
        self.size, self.num_workers, self.window, self.digest = size, num_workers, window, digest
        self.skipped = skipped if skipped is not None else []  # shared with DatasetSplits.skipped: the run's list
        self._handles: OrderedDict[int, int] = OrderedDict()
        self._pid = -1

    # -- what the loader asks for -------------------------------------------------------------------------

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """The epoch's sample order: shards permuted, samples permuted within windows of `window` shards."""
        return window_order(self.table["shard"], seed=seed, epoch=epoch, window=self.window)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, int, list[SkippedFile]]:
        return self.__getitems__([row])[0]

    def __getitems__(self, rows: Sequence[int]) -> list[tuple[torch.Tensor, int, list[SkippedFile]]]:
        """Read and decode a batch of rows (one call per batch: the reads of a URL go out together)."""
        blobs = self.read(rows)
        return [self._decoded(int(row), blob) for row, blob in zip(rows, blobs, strict=True)]

    @staticmethod
    def collate(items: list[tuple[torch.Tensor, int, list[SkippedFile]]]) -> tuple[torch.Tensor, torch.Tensor, list]:
        """A batch: uint8 images (B, 3, S, S), int64 labels (B,), and the samples replaced in it."""
        images = torch.stack([item[0] for item in items])
        labels = torch.tensor([item[1] for item in items], dtype=torch.int64)
        return images, labels, [bad for item in items for bad in item[2]]

    def note_skipped(self, skipped: list[SkippedFile]) -> None:
        """Record samples a worker replaced (called by the loader in the main process)."""
        if skipped:
            self.skipped.extend(skipped)
            report_skipped(skipped, f"{self.root} (while streaming)")

    def describe(self, batch_size: int, world_size: int) -> str:
        """One log line: how the epoch is cut into global batches and shared by the ranks."""
        n, shards = len(self), len(np.unique(self.table["shard"]))
        dropped = n % batch_size
        tail = (
            f"the last {dropped} samples of each epoch's order are dropped to keep whole global batches (a different "
            "set each epoch)"
            if dropped
            else "every sample is read once per epoch"
        )
        return (
            f"shards: {n} samples in {shards} shards of {self.root}, order windowed over {self.window} shards; "
            f"{n // batch_size} global batches of {batch_size} per epoch, {batch_size // world_size} per rank on "
            f"{world_size} rank(s); {tail}"
        )

    # -- subsets (train_fraction, limit_per_class, the seeded split) and the whole dataset -----------------

    def subset(self, rows: torch.Tensor) -> ShardSource:
        """The samples at `rows`, in that order, reading the same shards."""
        picked = rows.numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        return self._with({column: values[picked] for column, values in self.table.items()}, self.shards)

    def concat(self, other: ShardSource) -> ShardSource:
        """These samples, then those of `other` (another split of the same shard directory)."""
        shifted = {**other.table, "shard": other.table["shard"] + len(self.shards)}
        table = {column: np.concatenate([self.table[column], shifted[column]]) for column in self.table}
        return self._with(table, self.shards + other.shards)

    def _with(self, table: Table, shards: list[ShardInfo]) -> ShardSource:
        return ShardSource(
            self.root, shards, table, self.class_names, self.size, num_workers=self.num_workers,
            window=self.window, digest=self.digest, skipped=self.skipped,
        )  # fmt: skip

    # -- reading ------------------------------------------------------------------------------------------

    def sample_name(self, row: int) -> str:
        """`shard:original/path.jpg`, how a sample is named in messages."""
        return f"{self.shards[int(self.table['shard'][row])].name}:{self.table['path'][row]}"

    def read(self, rows: Sequence[int]) -> list[bytes]:
        """The encoded bytes of each row's image member."""
        shard, offset, size = (self.table[c][np.asarray(rows, dtype=np.int64)] for c in ("shard", "offset", "size"))
        if is_url(self.root):
            fs, _ = filesystem(self.root)
            paths = [filesystem(join(self.root, self.shards[s].name))[1] for s in shard.tolist()]
            blobs = fs.cat_ranges(paths, offset.tolist(), (offset + size).tolist())
        else:
            triples = zip(shard.tolist(), offset.tolist(), size.tolist(), strict=True)
            blobs = [os.pread(self._handle(s), n, o) for s, o, n in triples]
        for row, blob, wanted in zip(rows, blobs, size.tolist(), strict=True):
            if len(blob) != wanted:
                raise UsageError(self._truncated(int(row), len(blob), wanted))
        return blobs

    def _truncated(self, row: int, got: int, wanted: int) -> str:
        name = self.shards[int(self.table["shard"][row])].name
        return (
            f"shard {join(self.root, name)} is truncated: sample {self.table['path'][row]} needs {wanted} bytes at "
            f"offset {int(self.table['offset'][row])}, {got} were there; copy the shard again (`vitkit data verify "
            f"{self.root}` checks every shard)"
        )

    def _handle(self, shard: int) -> int:
        """An open file descriptor of a local shard, per process (DataLoader workers open their own)."""
        if self._pid != os.getpid():
            self._handles, self._pid = OrderedDict(), os.getpid()
        if shard in self._handles:
            self._handles.move_to_end(shard)
            return self._handles[shard]
        fd = os.open(join(self.root, self.shards[shard].name), os.O_RDONLY)
        if hasattr(os, "posix_fadvise"):  # read the shard ahead: the window's reads then come from memory
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        self._handles[shard] = fd
        if len(self._handles) > MAX_OPEN_SHARDS:
            os.close(self._handles.popitem(last=False)[1])
        return fd

    def _decoded(self, row: int, blob: bytes) -> tuple[torch.Tensor, int, list[SkippedFile]]:
        """Row's image at the stored size, or the next decodable row's, with the rows that failed."""
        bad: list[SkippedFile] = []
        for step in range(len(self)):
            candidate = (row + step) % len(self)
            try:
                data = blob if step == 0 else self.read([candidate])[0]
                image = pil_to_uint8(to_square(decode_bytes(data), self.size))
            except BadImageError as error:
                bad.append(SkippedFile(self.sample_name(candidate), str(error)))
                continue
            return image, int(self.labels[candidate]), bad
        raise UsageError(f"none of the {len(self)} samples of {self.root} could be decoded")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"], state["_pid"] = OrderedDict(), -1  # descriptors do not travel to spawned workers
        return state


def check_shards(root: str, shards: Sequence[ShardInfo]) -> None:
    """Every shard is there with the size its index records, else an error naming the first that is not."""
    sizes = _listed_sizes(root)
    for shard in shards:
        path = join(root, shard.name)
        if sizes is None:
            try:
                found = os.path.getsize(path)
            except FileNotFoundError:
                raise MissingPathError(f"shard {path} is missing (the index lists it); copy it again") from None
        else:
            found = sizes.get(shard.name, -1)
            if found < 0 and sizes:
                raise MissingPathError(f"shard {path} is missing (the index lists it); copy it again")
        if found >= 0 and found != shard.bytes:
            what = "truncated" if found < shard.bytes else "longer than packed"
            raise UsageError(
                f"shard {path} is {what}: {found} bytes, the index records {shard.bytes}; copy it again or pack the "
                f"data again (`vitkit data verify {root}` checks every shard)"
            )


def _listed_sizes(root: str) -> dict[str, int] | None:
    """{name: bytes} of a URL directory from one listing ({} when it cannot be listed: plain https); None locally."""
    if not is_url(root):
        return None
    try:
        fs, inner = filesystem(root)
        return {os.path.basename(e["name"].rstrip("/")): int(e["size"]) for e in fs.ls(inner, detail=True)}
    except (OSError, NotImplementedError, ValueError, KeyError):
        return {}


def load_shards(config: DataConfig, root: str) -> DatasetSplits:
    """The train and val sources of a shard directory (its own val split, else a seeded `val_fraction` split)."""
    index, tables, digest = read_index(root)
    for split in index.splits.values():
        check_shards(root, split.shards)
    skipped = [SkippedFile(s["path"], s["reason"]) for split in index.splits.values() for s in split.skipped]
    sizes = np.concatenate([np.stack([t["width"], t["height"]], 1) for t in tables.values()]).astype(np.int64)
    size = stored_size(sizes, config.img_size)

    def source(split: str) -> ShardSource:
        table = _first_per_class(tables[split], config.limit_per_class)
        return ShardSource(
            root, index.splits[split].shards, table, index.class_names, size, num_workers=config.num_workers,
            window=config.shard_window, digest=digest, skipped=skipped,
        )  # fmt: skip

    if "train" not in index.splits:
        raise UsageError(f"{root} has no train split (it holds {sorted(index.splits)}); pack it with --split train")
    train = source("train")
    if "val" in index.splits:
        val = source("val")
    else:
        train_rows, val_rows = stratified_split(train.labels, config.val_fraction, config.seed)
        train, val = train.subset(train_rows), train.subset(val_rows)
    report_skipped(skipped, f"{root} (left out when packing)")
    logger.info("%s: %d train / %d val samples in shards, stored at %dpx", root, len(train), len(val), size)
    return DatasetSplits(train, val, index.class_names, skipped)


def _first_per_class(table: Table, limit: int | None) -> Table:
    """The first `limit` rows of each class, in table order (all rows when `limit` is None)."""
    if limit is None:
        return table
    labels = table["label"]
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:limit] for c in np.unique(labels)]))
    return {column: values[keep] for column, values in table.items()}
