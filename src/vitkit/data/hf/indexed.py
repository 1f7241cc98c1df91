"""Map-style Hugging Face datasets (saved, or imagefolder): decoded once into memory, or `HFSource`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vitkit.data import decode
from vitkit.data.cache import cache_path, cache_root, content_key, load_entry, save_entry
from vitkit.data.config import DataConfig
from vitkit.data.decode import BadImageError, SkippedFile, decode_bytes, decode_image, pil_to_uint8, to_square
from vitkit.data.hf.columns import require_datasets
from vitkit.data.imagefolder import FLAT_CLASS, parallel_chunks, read_header, stored_size, stratified_split
from vitkit.data.sources import DatasetSplits, ImageSource, TensorSource
from vitkit.errors import UsageError

logger = logging.getLogger("vitkit.data")

Blob = dict[str, Any]  # an Image feature's undecoded value: {"bytes": bytes | None, "path": str | None}


def blob_of(value: Blob) -> bytes | str:
    """What to decode for an Image value: its bytes, or the file it points to (imagefolder rows)."""
    return value["bytes"] if value.get("bytes") else (value.get("path") or b"")


def decode_blob(blob: bytes | str, size: int) -> torch.Tensor:
    """Decode exactly as a folder's file or a shard's sample is decoded, to the stored size."""
    image = decode_bytes(blob) if isinstance(blob, bytes) else decode_image(blob)
    return pil_to_uint8(to_square(image, size))


def collate_rows(items: list[tuple[torch.Tensor, int, list[SkippedFile]]]) -> tuple[torch.Tensor, torch.Tensor, list]:
    """A batch: uint8 images (B, 3, S, S), int64 labels (B,), and the rows replaced in it."""
    images = torch.stack([item[0] for item in items])
    labels = torch.tensor([item[1] for item in items], dtype=torch.int64)
    return images, labels, [bad for item in items for bad in item[2]]


class HFSource(ImageSource, Dataset):
    """Rows of map-style Hugging Face datasets: row i is row `table["row"][i]` of `parts[table["part"][i]]`.

    Each part holds only the image column, undecoded (`Image(decode=False)`); DataLoader workers decode batches.
    A row that does not decode is replaced by the next decodable row (batches keep their shape and the order its
    function of (seed, epoch)), counted, logged and listed in the run's `skipped_files`, as for packed shards.
    """

    def __init__(
        self,
        parts: Sequence[Any],
        table: dict[str, np.ndarray],
        labels: torch.Tensor,
        class_names: Sequence[str],
        size: int,
        *,
        names: Sequence[str],
        image_column: str,
        num_workers: int = 2,
        skipped: list[SkippedFile] | None = None,
    ) -> None:
        self.parts, self.table, self.names, self.image_column = list(parts), table, list(names), image_column
        self.labels = labels.to(torch.int64)
        self.class_names, self.size, self.num_workers = list(class_names), size, num_workers
        self.skipped = skipped if skipped is not None else []  # shared with DatasetSplits.skipped: the run's list

    def __getitem__(self, row: int) -> tuple[torch.Tensor, int, list[SkippedFile]]:
        return self.__getitems__([row])[0]

    def __getitems__(self, rows: Sequence[int]) -> list[tuple[torch.Tensor, int, list[SkippedFile]]]:
        """Read a batch of rows with one query per part, then decode them."""
        blobs = self.read(rows)
        return [self._decoded(int(row), blob) for row, blob in zip(rows, blobs, strict=True)]

    def read(self, rows: Sequence[int]) -> list[bytes | str]:
        """The encoded bytes (or file path) of each row's image."""
        picked = np.asarray(rows, dtype=np.int64)
        part, inner = self.table["part"][picked], self.table["row"][picked]
        blobs: list[bytes | str] = [b""] * len(picked)
        for p in np.unique(part).tolist():
            at = np.flatnonzero(part == p)
            values = self.parts[p][inner[at].tolist()][self.image_column]
            for i, value in zip(at.tolist(), values, strict=True):
                blobs[i] = blob_of(value)
        return blobs

    def _decoded(self, row: int, blob: bytes | str) -> tuple[torch.Tensor, int, list[SkippedFile]]:
        bad: list[SkippedFile] = []
        for step in range(len(self)):
            candidate = (row + step) % len(self)
            try:
                image = decode_blob(blob if step == 0 else self.read([candidate])[0], self.size)
            except BadImageError as error:
                bad.append(SkippedFile(self.sample_name(candidate), str(error)))
                continue
            return image, int(self.labels[candidate]), bad
        raise UsageError(f"none of the {len(self)} images of this Hugging Face dataset could be decoded")

    def sample_name(self, row: int) -> str:
        """`NAME[row]`, how a row is named in messages."""
        return f"{self.names[int(self.table['part'][row])]}[{int(self.table['row'][row])}]"

    collate = staticmethod(collate_rows)

    def note_skipped(self, skipped: list[SkippedFile]) -> None:
        """Record rows a worker replaced (called by the loader in the main process)."""
        if skipped:
            self.skipped.extend(skipped)
            decode.report_skipped(skipped, "a Hugging Face dataset (while streaming)")

    def describe(self, batch_size: int, world_size: int) -> str:
        """One log line: what is read and how the epoch is cut."""
        return (
            f"hf: {len(self)} rows of {', '.join(self.names)}, decoded by {self.num_workers} worker(s) per rank; "
            f"{len(self) // batch_size} global batches of {batch_size} per epoch in a (seed, epoch) order"
        )

    def subset(self, rows: torch.Tensor) -> HFSource:
        """The rows at `rows`, in that order."""
        picked = rows.numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
        return self._with(self.parts, self.names, {c: v[picked] for c, v in self.table.items()}, self.labels[rows])

    def concat(self, other: HFSource) -> HFSource:
        """These rows, then those of `other` (another split of the same dataset)."""
        shifted = {**other.table, "part": other.table["part"] + len(self.parts)}
        table = {c: np.concatenate([self.table[c], shifted[c]]) for c in self.table}
        labels = torch.cat([self.labels, other.labels])
        return self._with(self.parts + other.parts, self.names + other.names, table, labels)

    def _with(self, parts: list[Any], names: list[str], table: dict[str, np.ndarray], labels: torch.Tensor) -> HFSource:
        return HFSource(
            parts, table, labels, self.class_names, self.size, names=names, image_column=self.image_column,
            num_workers=self.num_workers, skipped=self.skipped,
        )  # fmt: skip


def indexed_splits(
    splits: dict[str, Any],
    train_name: str,
    val_name: str | None,
    columns: tuple[str, str | None, list[str] | None],
    config: DataConfig,
    where: dict[str, str],
) -> DatasetSplits:
    datasets = require_datasets()
    image, label, class_names = columns
    wanted = [train_name] + ([val_name] if val_name else [])
    parts = {n: splits[n].select_columns([image]).cast_column(image, datasets.Image(decode=False)) for n in wanted}
    labels = {n: _labels(splits[n], label) for n in wanted}
    if class_names is None:
        top = max((int(v.max()) for v in labels.values() if len(v)), default=0)
        class_names = [str(c) for c in range(top + 1)] if label else [FLAT_CLASS]
    skipped: list[SkippedFile] = []
    kept, sizes = {}, []
    for n in wanted:
        headers = _headers(parts[n], image, config, splits[n])
        bad = [i for i, h in enumerate(headers) if isinstance(h, str)]
        skipped += [SkippedFile(f"{where[n]}[{i}]", headers[i]) for i in bad]
        unlabelled = np.flatnonzero((labels[n] < 0) | (labels[n] >= len(class_names))).tolist()
        skipped += [SkippedFile(f"{where[n]}[{i}]", f"label {int(labels[n][i])} is no class") for i in unlabelled]
        keep = np.ones(len(headers), dtype=bool)
        keep[bad + unlabelled] = False
        kept[n] = _first_per_class(np.flatnonzero(keep), labels[n], config.limit_per_class)
        sizes += [headers[i] for i in kept[n].tolist()]
    if not any(len(k) for k in kept.values()):
        raise UsageError(f"{config.path}: no decodable image in {', '.join(wanted)}")
    size = stored_size(np.array(sizes, dtype=np.int64).reshape(-1, 2), config.img_size)
    # As for folders: held in memory, decoded once and cached, when the decoded images fit under max_memory_gb.
    in_memory = sum(len(k) for k in kept.values()) * 3 * size * size <= config.max_memory_gb * 2**30
    decoded, hits = {}, []
    for n in wanted if in_memory else ():
        decoded[n], failed, hit = _decoded(parts[n], kept[n], image, size, config, splits[n])
        skipped += [SkippedFile(f"{where[n]}[{row}]", reason) for row, reason in failed.items()]
        kept[n] = np.array([row for row in kept[n].tolist() if row not in failed], dtype=np.int64)
        hits.append(hit)

    def source(n: str) -> ImageSource:
        rows = kept[n]
        labelled = torch.from_numpy(labels[n][rows].astype(np.int64))
        if in_memory:
            return TensorSource(decoded[n], labelled, class_names)
        table = {"part": np.zeros(len(rows), dtype=np.int64), "row": rows.astype(np.int64)}
        return HFSource(
            [parts[n]], table, labelled, class_names, size, names=[where[n]], image_column=image,
            num_workers=config.num_workers, skipped=skipped,
        )  # fmt: skip

    train = source(train_name)
    if val_name:
        val = source(val_name)
    else:
        train_rows, val_rows = stratified_split(train.labels, config.val_fraction, config.seed)
        train, val = train.subset(train_rows), train.subset(val_rows)
    decode.report_skipped(skipped, config.path)
    how = ("in memory, " + ("cache hit" if all(hits) else "decoded")) if in_memory else "streamed by decode workers"
    logger.info(
        "%s: %d train / %d val rows (%s), stored at %dpx (%s)", config.path, len(train), len(val),
        f"splits {train_name} and {val_name}" if val_name else f"{train_name} held out by val_fraction", size, how,
    )  # fmt: skip
    return DatasetSplits(train, val, class_names, skipped)


def _decoded(
    part: Any, rows: np.ndarray, image: str, size: int, config: DataConfig, original: Any
) -> tuple[torch.Tensor, dict[int, str], bool]:
    """uint8 images of `rows` that decode, {row: reason} of those that do not, and whether they came from the cache
    (keyed by the dataset's fingerprint, the rows and the stored size)."""
    fingerprint = getattr(original, "_fingerprint", None)
    params = {"source": "hf-images", "column": image, "size": size, "max_pixels": decode.MAX_IMAGE_PIXELS}
    params["rows"] = hashlib.sha256(rows.astype(np.int64).tobytes()).hexdigest()
    key = content_key([(str(fingerprint), len(part), 0)], params) if fingerprint else None
    location = cache_path(cache_root(config.cache_dir), "images", key) if key else None
    entry = load_entry(location) if location else None
    if entry is not None:
        return entry["images"], entry["bad"], True
    chunks = parallel_chunks(_decode_chunk, rows.tolist(), config.num_workers, part, image, size)
    images = torch.cat([c[0] for c in chunks]) if chunks else torch.empty(0, 3, size, size, dtype=torch.uint8)
    bad = {row: reason for c in chunks for row, reason in c[1].items()}
    if location:
        save_entry(location, {"images": images, "bad": bad})
    return images, bad, False


def _decode_chunk(rows: Sequence[int], part: Any, image: str, size: int) -> tuple[torch.Tensor, dict[int, str]]:
    good, bad = [], {}
    for row, value in zip(rows, part[list(rows)][image], strict=True):
        try:
            good.append(decode_blob(blob_of(value), size))
        except BadImageError as error:
            bad[int(row)] = str(error)
    return (torch.stack(good) if good else torch.empty(0, 3, size, size, dtype=torch.uint8)), bad


def _labels(dataset: Any, label: str | None) -> np.ndarray:
    if label is None:
        return np.zeros(len(dataset), dtype=np.int64)
    return np.asarray(dataset.select_columns([label]).with_format("numpy")[:][label], dtype=np.int64)


def _first_per_class(rows: np.ndarray, labels: np.ndarray, limit: int | None) -> np.ndarray:
    """The first `limit` of `rows` of each class, in order (all when `limit` is None)."""
    if limit is None:
        return rows
    keep = [rows[labels[rows] == c][:limit] for c in np.unique(labels[rows])]
    return np.sort(np.concatenate(keep)) if keep else rows


def _headers(part: Any, image: str, config: DataConfig, original: Any) -> list[tuple[int, int] | str]:
    """(width, height) or the reason it is unusable, of every row's image (read in workers; cached by the
    dataset's fingerprint)."""
    fingerprint = getattr(original, "_fingerprint", None)
    params = {"source": "hf", "column": image, "max_pixels": decode.MAX_IMAGE_PIXELS}
    key = content_key([(str(fingerprint), len(part), 0)], params) if fingerprint else None
    cache = cache_root(config.cache_dir)
    entry = load_entry(cache_path(cache, "hf-index", key)) if key else None
    if entry is not None:
        return entry["headers"]
    chunks = parallel_chunks(_header_chunk, list(range(len(part))), config.num_workers, part, image)
    headers = [h if isinstance(h, str) else (int(h[0]), int(h[1])) for chunk in chunks for h in chunk]
    if key:
        save_entry(cache_path(cache, "hf-index", key), {"headers": headers})
    return headers


def _header_chunk(rows: Sequence[int], part: Any, image: str) -> list[tuple[int, int] | str]:
    values = part[rows[0] : rows[-1] + 1][image] if rows else []
    return [read_header(blob_of(v)) if blob_of(v) else "no image in this row" for v in values]
