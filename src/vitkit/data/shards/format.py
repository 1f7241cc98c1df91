"""The on-disk form of a packed dataset: webdataset tar shards plus one index that describes them.

A shard directory holds, per split, tar files in the webdataset layout (`train-000000.tar`, ...: for each
sample a `KEY.jpg` (or `.png`, ...) member with the original encoded bytes and a `KEY.cls` member with the class
index as text, so `webdataset.WebDataset(...).decode("pil").to_tuple("jpg;png", "cls")` reads them too), and

* `vitkit-shards.json`, the index: format version, class names, where the data came from, and per split the
  shards (name, sample count, bytes, sha256) and the files left out when packing;
* `vitkit-samples.npz`, the sample table of each split (its sha256 is in the index): the shard, byte offset and
  size of every image member, its label, its width and height (the stored size is chosen from them, as for
  folders) and its original path (to name a bad sample).

The table is what makes the order exact: any sample can be read by (shard, offset, size) without scanning a tar.
Paths are local paths or any fsspec URL (`s3://bucket/shards`, `https://host/shards`, `simplecache::s3://...`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vitkit.errors import MissingPathError, UsageError

INDEX_FILE = "vitkit-shards.json"
TABLE_FILE = "vitkit-samples.npz"
FORMAT = "vitkit-shards"
VERSION = 1
TABLE_COLUMNS = ("shard", "offset", "size", "label", "width", "height", "path")


@dataclass(frozen=True)
class ShardInfo:
    """One tar file of a split: its name in the directory, how many samples it holds, its size and sha256."""

    name: str
    samples: int
    bytes: int
    sha256: str


@dataclass
class SplitIndex:
    """The shards of one split, and the files the packer left out (path, reason)."""

    shards: list[ShardInfo] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def samples(self) -> int:
        """Samples in the split."""
        return sum(s.samples for s in self.shards)


@dataclass
class ShardIndex:
    """What `vitkit-shards.json` says: class names, provenance, and the splits' shards."""

    class_names: list[str]
    splits: dict[str, SplitIndex]
    source: dict[str, Any] = field(default_factory=dict)  # what was packed, how, when, by which vitkit
    table_sha256: str = ""

    def to_json(self) -> str:
        """The index as JSON text (what `write_index` stores)."""
        document = {
            "format": FORMAT,
            "version": VERSION,
            "class_names": self.class_names,
            "source": self.source,
            "table": TABLE_FILE,
            "table_sha256": self.table_sha256,
            "splits": {
                name: {"samples": split.samples, "shards": [asdict(s) for s in split.shards], "skipped": split.skipped}
                for name, split in self.splits.items()
            },
        }
        return json.dumps(document, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str) -> ShardIndex:
        """Parse an index, refusing anything that is not a vitkit shard index of a known version."""
        try:
            document = json.loads(text)
        except ValueError as error:
            raise UsageError(f"{where} is not valid JSON ({error}); re-run `vitkit data pack`") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise UsageError(f'{where} is not a vitkit shard index (no "format": "{FORMAT}")')
        if document.get("version") != VERSION:
            raise UsageError(
                f"{where} is shard index version {document.get('version')}; this vitkit reads version {VERSION}"
            )
        splits = {
            name: SplitIndex([ShardInfo(**s) for s in split["shards"]], list(split.get("skipped", [])))
            for name, split in document["splits"].items()
        }
        return cls(list(document["class_names"]), splits, dict(document.get("source", {})), document["table_sha256"])


def is_url(path: str) -> bool:
    """Whether `path` is an fsspec URL (`s3://...`, `https://...`, `simplecache::s3://...`) rather than a local path."""
    return "://" in path


def join(root: str, name: str) -> str:
    """`root/name` for a local directory or a URL."""
    return f"{root.rstrip('/')}/{name}" if is_url(root) else os.path.join(root, name)


def filesystem(path: str) -> Any:
    """The fsspec filesystem object and the path inside it, for a URL."""
    import fsspec  # comes with huggingface_hub; imported only for URLs

    fs, inner = fsspec.core.url_to_fs(path)
    return fs, inner


def read_bytes(path: str) -> bytes:
    """The whole content of a local file or a URL; MissingPathError when it is not there."""
    try:
        if not is_url(path):
            with open(path, "rb") as handle:
                return handle.read()
        fs, inner = filesystem(path)
        return fs.cat_file(inner)
    except FileNotFoundError:
        raise MissingPathError(f"{path} does not exist") from None


def shard_root(path: str) -> str | None:
    """The shard directory `path` names (the directory, or its index file), or None when it holds no shard index."""
    path = str(path)
    root = (path[: -len(INDEX_FILE)].rstrip("/") or ".") if path.endswith(INDEX_FILE) else path
    if is_url(path):
        try:
            fs, inner = filesystem(join(root, INDEX_FILE))
            return root if fs.exists(inner) else None
        except (ImportError, ValueError, OSError):
            return None
    return root if os.path.isfile(os.path.join(os.path.expanduser(root), INDEX_FILE)) else None


def read_index(root: str) -> tuple[ShardIndex, dict[str, dict[str, np.ndarray]], str]:
    """The index, each split's sample table (column -> array) and the sha256 of the index file (the data's identity)."""
    index_path = join(root, INDEX_FILE)
    raw = read_bytes(index_path)
    index = ShardIndex.from_json(raw.decode(), index_path)
    table_raw = read_bytes(join(root, TABLE_FILE))
    if hashlib.sha256(table_raw).hexdigest() != index.table_sha256:
        raise UsageError(
            f"{join(root, TABLE_FILE)} does not match its index (sha256 differs): the directory was changed after "
            "packing; pack it again"
        )
    with np.load(io.BytesIO(table_raw), allow_pickle=False) as archive:
        tables = {split: {column: archive[f"{split}/{column}"] for column in TABLE_COLUMNS} for split in index.splits}
    for split, table in tables.items():
        if len(table["label"]) != index.splits[split].samples:
            raise UsageError(f"{root}: the {split} table has {len(table['label'])} rows, the index counts "
                             f"{index.splits[split].samples} samples; pack it again")  # fmt: skip
    return index, tables, hashlib.sha256(raw).hexdigest()


def write_index(root: str, index: ShardIndex, tables: dict[str, dict[str, np.ndarray]]) -> None:
    """Write the sample table, then the index that names its hash (local directories only)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{split}/{column}": table[column] for split, table in tables.items() for column in table})
    table_raw = buffer.getvalue()
    index.table_sha256 = hashlib.sha256(table_raw).hexdigest()
    _atomic_write(os.path.join(root, TABLE_FILE), table_raw)
    _atomic_write(os.path.join(root, INDEX_FILE), index.to_json().encode())


def _atomic_write(path: str, data: bytes) -> None:
    scratch = f"{path}.tmp-{os.getpid()}"
    with open(scratch, "wb") as handle:
        handle.write(data)
    os.replace(scratch, path)


def sha256_of(path: str, chunk: int = 1 << 22) -> tuple[str, int]:
    """(sha256 hex digest, bytes read) of a local file or URL, streamed in `chunk`-byte pieces."""
    digest, total = hashlib.sha256(), 0
    if is_url(path):
        fs, inner = filesystem(path)
        handle = fs.open(inner, "rb")
    else:
        handle = open(path, "rb")  # noqa: SIM115 - closed below for both kinds
    with handle:
        while block := handle.read(chunk):
            digest.update(block)
            total += len(block)
    return digest.hexdigest(), total


def parse_size(text: str) -> int:
    """Bytes from '512MB', '1.5GiB', '100k' or a plain number (decimal units: MB = 10^6; MiB = 2^20)."""
    units = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30}
    value = text.strip().lower().removesuffix("b")
    number = value.rstrip("kmgti")
    unit = value[len(number) :]
    try:
        size = int(float(number) * units[unit])
    except (ValueError, KeyError):
        raise UsageError(f"cannot read the size {text!r}; write e.g. 512MB, 1GiB or 100000000") from None
    if size <= 0:
        raise UsageError(f"a shard size must be positive, got {text!r}")
    return size
