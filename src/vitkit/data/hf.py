"""Hugging Face `datasets` as a source: `--data hf:PATH_OR_NAME[:SPLIT]`.

PATH is a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (read with `load_from_disk`) or
an `imagefolder` directory (read with `load_dataset("imagefolder", data_dir=PATH)`, its arrow cache under vitkit's
cache directory); a NAME that is no local path is a Hub dataset, read with `load_dataset(NAME, streaming=True)`.
Without SPLIT the dataset's own splits are used, train and its held-out split named as for folders
(`imagefolder.choose_splits`: val, valid, validation, else test; `--train-split` / `--val-split` name them); with
SPLIT only that split is read and held out by `val_fraction`, as a folder without split sub-folders is. The image
column is the one `Image` feature and the label column the one `ClassLabel` (its names are the class names), else an
int column named label or labels (classes "0".."K-1"), else none (one class: unlabelled images for pre-training);
`--image-column` / `--label-column` name them.

Order and resume. A saved or imagefolder dataset is map-style and read as a folder is: every image decoded by
`vitkit.data.decode` (its encoded bytes, or the file an imagefolder row points to) to the stored size chosen as for
folders; held in memory (decoded once by `num_workers` processes, cached under a key of the dataset's fingerprint)
when it fits under `max_memory_gb`, else `HFSource`, an indexed source like a streamed folder or packed shards, whose
DataLoader workers decode whole batches. Either way the loader draws the same (seed, epoch) permutation as for every
other source and a checkpoint's batch resumes the epoch exactly: `datasets` is used for storage and indexing only,
since vitkit's own sampler already resumes exactly.

A Hub dataset is streamed (`IterableDataset`), which has no random access, and `datasets`' own resume
(`IterableDataset.state_dict`) loses the shuffle buffer, so it is not exact. `HFStreamSource` therefore keeps its
own reader state: epoch e reads `stream.shuffle(seed=f(seed, e), buffer_size=SHUFFLE_BUFFER)` (a function of
(seed, epoch) while the Hub data is unchanged), global batch b is positions b*B .. (b+1)*B-1 of that stream, and a
resumed epoch skips to its offset (`IterableDataset.skip`, which reads and drops the samples before it: exact, but
the skipped bytes are downloaded again). Every DataLoader worker of every rank reads the stream and decodes only its
own batches, so a stream is read (workers x ranks) times; a large dataset is better downloaded (`save_to_disk`) or
packed (`vitkit data pack`). A stream needs the split's size from the dataset's metadata (the schedule counts
steps), a held-out split of its own and ClassLabel labels (no pass over the labels is made), and its stored size is
chosen from the first `PEEK` images.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vitkit.data import decode
from vitkit.data.cache import cache_path, cache_root, content_key, load_entry, save_entry
from vitkit.data.config import DataConfig
from vitkit.data.decode import BadImageError, SkippedFile, decode_bytes, decode_image, pil_to_uint8, to_square
from vitkit.data.imagefolder import (
    FLAT_CLASS,
    choose_splits,
    parallel_chunks,
    read_header,
    stored_size,
    stratified_split,
)
from vitkit.data.sources import DatasetSplits, ImageSource, TensorSource, subset_source
from vitkit.errors import MissingPathError, UsageError

logger = logging.getLogger("vitkit.data")

PREFIX = "hf:"
SHUFFLE_BUFFER = 10_000  # samples in a stream's shuffle buffer (datasets' own default is 1,000)
PEEK = 64  # images of a stream whose sizes choose its stored size
LABEL_NAMES = ("label", "labels")  # an int column so named is the label column when no ClassLabel is
_HUB_NAME = re.compile(r"[\w][\w.-]*(/[\w][\w.-]*)?")  # NAME or OWNER/NAME, as the Hub spells them
_SPLIT_NAME = re.compile(r"[\w][\w.-]*")
Blob = dict[str, Any]  # an Image feature's undecoded value: {"bytes": bytes | None, "path": str | None}


def is_hf_path(path: str) -> bool:
    """Whether a data path names a Hugging Face dataset (`hf:...`)."""
    return path.startswith(PREFIX)


def parse_hf_path(path: str) -> tuple[str, str | None]:
    """`hf:PATH_OR_NAME[:SPLIT]` -> (PATH_OR_NAME, SPLIT or None)."""
    location = path[len(PREFIX) :]
    head, _, tail = location.rpartition(":")
    if head and _SPLIT_NAME.fullmatch(tail):
        return head, tail
    if not location:
        raise UsageError(
            "--data hf: names no dataset; give hf:DIR (saved with save_to_disk, or an imagefolder directory) or "
            "hf:OWNER/NAME (the Hub), optionally followed by :SPLIT"
        )
    return location, None


def load_hf(config: DataConfig) -> DatasetSplits:
    """The train and val sources of `config.path` (`hf:...`); see the module docstring."""
    location, only = parse_hf_path(config.path)
    splits, streaming = open_splits(location, config)
    names = list(splits)
    if only is not None:
        if only not in splits:
            raise UsageError(f"{config.path}: no split '{only}' (it has: {', '.join(names)})")
        splits, chosen = {only: splits[only]}, (only, None)
    else:
        chosen = choose_splits(names, config.train_split, config.val_split, config.path, "split")
        if chosen is None:
            raise UsageError(
                f"{config.path} has no 'train' split (it has: {', '.join(names)}); name the training split with "
                f"--train-split NAME, or read one split with hf:{location}:NAME (held out by val_fraction)"
            )
    train_name, val_name = chosen
    columns = find_columns(splits[train_name].features, config, config.path)
    for name in (val_name,) if val_name else ():
        if splits[name].features != splits[train_name].features:
            raise UsageError(f"{config.path}: splits '{train_name}' and '{name}' have different features")
    where = {name: f"{PREFIX}{location}:{name}" for name in splits}  # how messages name a split (and a row in it)
    if streaming:
        return _stream_splits(splits, train_name, val_name, columns, config, where)
    return _indexed_splits(splits, train_name, val_name, columns, config, where)


def has_own_split(path: str) -> bool:
    """Whether `hf:...` brings its own held-out split (without :SPLIT, a val/validation/test split beside train)."""
    location, only = parse_hf_path(path)
    if only is not None:
        return False
    names = list(open_splits(location, DataConfig(path=path))[0])
    try:
        chosen = choose_splits(names, None, None, path, "split")
    except UsageError:  # several validation splits: it has its own, the run's --val-split says which
        return True
    return chosen is not None and chosen[1] is not None


# -- opening ------------------------------------------------------------------------------------------------------


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise UsageError(
            "--data hf:... needs Hugging Face's datasets package: pip install 'vitkit[hf]' (or pip install datasets)"
        ) from None
    return datasets


def open_splits(location: str, config: DataConfig) -> tuple[dict[str, Any], bool]:
    """{split name: Dataset or IterableDataset} of a saved dataset, an imagefolder directory or a Hub name, and
    whether they stream."""
    datasets = _datasets()
    path = Path(location).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                return dict(loaded), False
            return {str(loaded.split or "train"): loaded}, False
        try:
            cache = cache_root(config.cache_dir) / "huggingface"
            return dict(datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=str(cache))), False
        except (ValueError, FileNotFoundError) as error:  # no image files, or files it cannot type
            raise UsageError(f"hf:{location}: not a saved dataset, and imagefolder cannot read it: {error}") from None
    looks_local = location.startswith(("/", ".", "~")) or path.exists() or not _HUB_NAME.fullmatch(location)
    if looks_local:
        raise MissingPathError(
            f"hf:{location}: no such directory; give a directory written by save_to_disk, an imagefolder directory "
            "(<split>/<class>/<image>), or a Hub dataset name (hf:OWNER/NAME)"
        )
    try:
        return dict(datasets.load_dataset(location, streaming=True)), True
    except Exception as error:  # no network, no such dataset, gated: all mean "cannot read it"
        raise UsageError(
            f"hf:{location}: no local directory of that name, and the Hugging Face Hub gave no dataset "
            f"({type(error).__name__}: {error})"
        ) from None


def find_columns(features: Any, config: DataConfig, where: str) -> tuple[str, str | None, list[str] | None]:
    """(image column, label column or None, ClassLabel names or None), named by config or inferred from `features`."""
    datasets = _datasets()
    if features is None:
        raise UsageError(f"{where}: the dataset does not declare its features, so its columns cannot be found")
    listed = ", ".join(f"{name} ({type(f).__name__})" for name, f in features.items())
    images = [name for name, f in features.items() if isinstance(f, datasets.Image)]
    image = config.image_column
    if image is None:
        if len(images) != 1:
            what = "no Image column" if not images else f"several Image columns ({', '.join(images)})"
            raise UsageError(f"{where} has {what}; its columns: {listed}; name one with --image-column NAME")
        image = images[0]
    elif image not in features or not isinstance(features[image], datasets.Image):
        found = f"is {features[image]!r}" if image in features else "does not exist"
        raise UsageError(
            f"--image-column {image}: the column {found}; {where} has: {listed} (cast a column of encoded images "
            f"with ds.cast_column(NAME, datasets.Image()))"
        )
    label = config.label_column
    if label is None:
        labels = [name for name, f in features.items() if isinstance(f, datasets.ClassLabel)]
        if len(labels) > 1:
            raise UsageError(
                f"{where} has several ClassLabel columns ({', '.join(labels)}); name one with --label-column NAME"
            )
        named = [n for n in LABEL_NAMES if n in features and _is_int(features[n])]
        label = (labels or named or [None])[0]
        if label is None:
            logger.info("%s: no label column (columns: %s); read as one class of unlabelled images", where, listed)
            return image, None, None
    elif label not in features:
        raise UsageError(f"--label-column {label}: {where} has no such column; its columns: {listed}")
    feature = features[label]
    if isinstance(feature, datasets.ClassLabel):
        return image, label, list(feature.names)
    if not _is_int(feature):
        raise UsageError(
            f"{where}: the label column '{label}' is {feature!r}, neither a ClassLabel nor an int; encode it with "
            f"ds.class_encode_column('{label}') and save the dataset again"
        )
    return image, label, None


def _is_int(feature: Any) -> bool:
    return type(feature).__name__ == "Value" and str(feature.dtype).startswith(("int", "uint"))


# -- map-style datasets: HFSource -------------------------------------------------------------------------------


def blob_of(value: Blob) -> bytes | str:
    """What to decode for an Image value: its bytes, or the file it points to (imagefolder rows)."""
    return value["bytes"] if value.get("bytes") else (value.get("path") or b"")


def decode_blob(blob: bytes | str, size: int) -> torch.Tensor:
    """Decode exactly as a folder's file or a shard's sample is decoded, to the stored size."""
    image = decode_bytes(blob) if isinstance(blob, bytes) else decode_image(blob)
    return pil_to_uint8(to_square(image, size))


def _collate(items: list[tuple[torch.Tensor, int, list[SkippedFile]]]) -> tuple[torch.Tensor, torch.Tensor, list]:
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

    collate = staticmethod(_collate)

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


def _indexed_splits(
    splits: dict[str, Any],
    train_name: str,
    val_name: str | None,
    columns: tuple[str, str | None, list[str] | None],
    config: DataConfig,
    where: dict[str, str],
) -> DatasetSplits:
    datasets = _datasets()
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
        train, val = subset_source(train, train_rows), subset_source(train, val_rows)
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


# -- streamed datasets: HFStreamSource ---------------------------------------------------------------------------


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
        self.stream = stream.select_columns(columns).cast_column(image_column, _datasets().Image(decode=False))
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

    collate = staticmethod(_collate)

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


def _stream_splits(
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
    undecoded = splits[train_name].select_columns([image]).cast_column(image, _datasets().Image(decode=False))
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
