"""Hub datasets, streamed: `HFStreamSource` reads a stream in a (seed, epoch) order and resumes at an offset."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vitkit.data import decode
from vitkit.data.config import DataConfig
from vitkit.data.decode import BadImageError, SkippedFile
from vitkit.data.hf.columns import require_datasets
from vitkit.data.hf.indexed import blob_of, collate_rows, decode_blob
from vitkit.data.imagefolder import FLAT_CLASS, read_header, stored_size
from vitkit.data.sources import DatasetSplits, ImageSource
from vitkit.errors import UsageError

logger = logging.getLogger("vitkit.data")

SHUFFLE_BUFFER = 10_000  # samples in a stream's shuffle buffer (datasets' own default is 1,000)
PEEK = 64  # images of a stream whose sizes choose its stored size


def stream_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of epoch `epoch`: a hash of (seed, epoch), as `loader.epoch_order` draws its permutation."""
    return int.from_bytes(hashlib.sha256(f"vitkit-hf-stream:{seed}:{epoch}".encode()).digest()[:4], "little")


class _Cursor:
    """One process's place in one stream: which pass, the next position, examples read ahead."""

    def __init__(self, key: int, position: int, iterator: Any) -> None:
        self.key, self.position, self.iterator = key, position, iterator
        self.ahead: deque[dict[str, Any]] = deque()
        self.last: dict[str, Any] | None = None


class HFStreamSource(ImageSource, Dataset):
    """A streamed split read in order: row k*n + p is position p of pass k (0: the stream as it is; e + 1: its
    shuffle of epoch e, `stream_seed(seed, e)`), so the loader's batches and resume offsets apply unchanged.

    `labels` are unknown until read (-1): a stream cannot be subset or split by class.
    """

    def __init__(
        self,
        stream: Any,
        length: int,
        class_names: Sequence[str],
        size: int,
        *,
        name: str,
        image_column: str,
        label_column: str | None,
        num_workers: int = 2,
        skipped: list[SkippedFile] | None = None,
    ) -> None:
        columns = [image_column] + ([label_column] if label_column else [])
        self.stream = stream.select_columns(columns).cast_column(image_column, require_datasets().Image(decode=False))
        self.name, self.image_column, self.label_column = name, image_column, label_column
        self.labels = torch.full((length,), -1, dtype=torch.int64)
        self.class_names, self.size, self.num_workers = list(class_names), size, num_workers
        self.skipped = skipped if skipped is not None else []
        self.order_seed = 0
        self._cursor: _Cursor | None = None
        self._pid = -1

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """Epoch `epoch`'s rows: every position of its shuffled pass, in stream order."""
        self.order_seed = seed  # set before the DataLoader starts its workers, which read it
        return torch.arange(len(self), dtype=torch.int64) + (epoch + 1) * len(self)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, int, list[SkippedFile]]:
        return self.__getitems__([row])[0]

    def __getitems__(self, rows: Sequence[int]) -> list[tuple[torch.Tensor, int, list[SkippedFile]]]:
        """Read on to a batch's positions (ascending, as the loader gives them to each worker) and decode them."""
        return [self._decoded(int(row)) for row in rows]

    def _decoded(self, row: int) -> tuple[torch.Tensor, int, list[SkippedFile]]:
        key, position = divmod(row, len(self))
        example, bad = self._at(key, position), []
        for ahead in range(len(self)):  # a bad image: the next decodable one of the stream
            try:
                image = decode_blob(blob_of(example[self.image_column]), self.size)
            except BadImageError as error:
                bad.append(SkippedFile(f"{self.name}[{position + ahead}]", str(error)))
                example = self._peek(ahead + 1)
                continue
            label = int(example[self.label_column]) if self.label_column else 0
            return image, label, bad
        raise UsageError(f"none of the images of {self.name} could be decoded")

    def _at(self, key: int, position: int) -> dict[str, Any]:
        cursor = self._cursor if self._pid == os.getpid() else None  # a forked worker starts its own reader
        if cursor is None or cursor.key != key or position < cursor.position - 1:
            cursor = self._cursor = self._open(key, position)
            self._pid = os.getpid()
        if position == cursor.position - 1 and cursor.last is not None:
            return cursor.last  # evaluation pads a rank's rows with repeats of the last one
        while cursor.position <= position:
            cursor.last = cursor.ahead.popleft() if cursor.ahead else self._next(cursor)
            cursor.position += 1
        assert cursor.last is not None
        return cursor.last

    def _peek(self, count: int) -> dict[str, Any]:
        cursor = self._cursor
        assert cursor is not None
        while len(cursor.ahead) < count:
            cursor.ahead.append(self._next(cursor))
        return cursor.ahead[count - 1]

    def _next(self, cursor: _Cursor) -> dict[str, Any]:
        try:
            return next(cursor.iterator)
        except StopIteration:
            raise UsageError(
                f"{self.name} ended after {cursor.position + len(cursor.ahead)} examples, but its metadata says "
                f"{len(self)}; the dataset changed on the Hub while it was read"
            ) from None

    def _open(self, key: int, position: int) -> _Cursor:
        """A reader at `position` of pass `key`: skip-to-offset, reading and dropping the examples before it."""
        stream = self.stream if key == 0 else self.stream.shuffle(
            seed=stream_seed(self.order_seed, key - 1), buffer_size=SHUFFLE_BUFFER
        )  # fmt: skip
        # `iter`, not `__iter__`: inside a DataLoader worker `__iter__` reads only that worker's share of the shards.
        batches = (stream.skip(position) if position else stream).iter(batch_size=1)
        return _Cursor(key, position, ({column: values[0] for column, values in b.items()} for b in batches))

    collate = staticmethod(collate_rows)

    def note_skipped(self, skipped: list[SkippedFile]) -> None:
        """Record samples a worker replaced (called by the loader in the main process)."""
        if skipped:
            self.skipped.extend(skipped)
            decode.report_skipped(skipped, f"{self.name} (while streaming)")

    def describe(self, batch_size: int, world_size: int) -> str:
        """One log line: what is streamed and what it costs."""
        return (
            f"hf: streaming {len(self)} samples of {self.name} (shuffle buffer {SHUFFLE_BUFFER}); each of "
            f"{self.num_workers} worker(s) on each of {world_size} rank(s) reads the whole stream and decodes its "
            "own batches; a resumed epoch skips to its offset by reading the samples before it"
        )

    def subset(self, rows: torch.Tensor) -> HFStreamSource:
        """Refused: a stream has no random access (train_fraction, limit_per_class, a val_fraction split)."""
        raise UsageError(
            f"{self.name} is streamed, so it cannot be subset or split by class (train_fraction, limit_per_class, "
            "val_fraction); download it with save_to_disk and give that directory, or use a dataset with a val split"
        )

    def concat(self, other: HFStreamSource) -> HFStreamSource:
        """Refused: two streams are not joined (evaluate --split val or train)."""
        raise UsageError(f"{self.name} is streamed: evaluate one split at a time (--split val or --split train)")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cursor"], state["_pid"] = None, -1  # an open reader does not travel to spawned workers
        return state


def stream_splits(
    splits: dict[str, Any],
    train_name: str,
    val_name: str | None,
    columns: tuple[str, str | None, list[str] | None],
    config: DataConfig,
    where: dict[str, str],
) -> DatasetSplits:
    image, label, class_names = columns
    if label is not None and class_names is None:
        raise UsageError(
            f"{config.path} is streamed and its label column '{label}' is an int without class names; a stream "
            "needs a ClassLabel column (or download the dataset with save_to_disk and give that directory)"
        )
    if val_name is None or config.limit_per_class is not None or config.train_fraction < 1.0:
        raise UsageError(
            f"{config.path} is streamed, so it needs a held-out split of its own and cannot be subset "
            "(limit_per_class, train_fraction); download it with save_to_disk and give that directory"
        )
    skipped: list[SkippedFile] = []  # one list: the run's skipped_files, filled while streaming
    undecoded = splits[train_name].select_columns([image]).cast_column(image, require_datasets().Image(decode=False))
    first = [blob_of(example[image]) for example in undecoded.take(PEEK)]
    size = stored_size(
        np.array([h for h in map(read_header, first) if not isinstance(h, str)], np.int64).reshape(-1, 2),
        config.img_size,
    )

    def source(n: str) -> HFStreamSource:
        sizes = getattr(getattr(splits[n], "info", None), "splits", None) or {}  # the Hub's dataset_info
        length = getattr(sizes.get(n), "num_examples", None)
        if not length:
            raise UsageError(
                f"{config.path}: the Hub's metadata does not say how many examples split '{n}' has, which the "
                "schedule needs; download it with save_to_disk and give that directory"
            )
        return HFStreamSource(
            splits[n], length, class_names or [FLAT_CLASS], size, name=where[n], image_column=image,
            label_column=label, num_workers=config.num_workers, skipped=skipped,
        )  # fmt: skip

    train, val = source(train_name), source(val_name)
    logger.info("%s: streaming %d train / %d val samples, stored at %dpx", config.path, len(train), len(val), size)
    return DatasetSplits(train, val, train.class_names, skipped)
