"""`vitkit data pack`: an ImageFolder (or the CIFAR python files) to webdataset tar shards and their index.

Folder images keep their original encoded bytes (no re-encoding); CIFAR's pickles hold raw pixels, which are
stored as lossless PNG. Files that are not usable images (by their header: zero bytes, not an image, a
decompression bomb) are left out and listed in the index, as a folder source would skip them. The training
split is shuffled once (`seed`) before it is cut into shards, so every shard holds a mix of all classes and
the windowed order of `vitkit.data.shards.order` shuffles well; the val split keeps the folder's order. The
tar files are written by webdataset's `ShardWriter` (the layout timm and the Hugging Face hub use); the index
records each sample's byte offset, read back from the written tar.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitkit.data.cifar import find_cifar, load_cifar
from vitkit.data.decode import SkippedFile
from vitkit.data.imagefolder import read_header, resolve_split_dirs, scan_classes, stratified_split
from vitkit.data.shards.format import ShardIndex, ShardInfo, SplitIndex, parse_size, sha256_of, write_index
from vitkit.errors import MissingPathError, UsageError

logger = logging.getLogger("vitkit.data")

SPLITS = ("train", "val")
KEY_DIGITS = 8  # sample keys are the sample's number in its split: 00000000, 00000001, ...


@dataclass(frozen=True)
class Item:
    """One sample to pack: where its bytes come from (a file, or pixels to encode), its label and size."""

    path: str  # original path, relative to the packed folder (a virtual name for CIFAR)
    label: int
    width: int
    height: int
    file: str | None = None  # the file whose bytes are stored as they are
    pixels: torch.Tensor | None = None  # uint8 (3, H, W), stored as PNG

    def encoded(self) -> tuple[str, bytes]:
        """(extension, bytes) of the image member."""
        if self.file is not None:
            with open(self.file, "rb") as handle:
                return Path(self.file).suffix.lower().lstrip("."), handle.read()
        buffer = io.BytesIO()
        Image.fromarray(self.pixels.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
        return "png", buffer.getvalue()


def pack(
    source: str | Path,
    out: str | Path,
    *,
    shard_size: str | int = "512MB",
    splits: Sequence[str] = SPLITS,
    seed: int = 0,
    val_fraction: float = 0.1,
    overwrite: bool = False,
) -> ShardIndex:
    """Pack `source` (an ImageFolder, or a CIFAR-10/100 python folder or .tar.gz) into shards under `out`.

    A folder with train/ and val/ keeps that split; a folder without takes a seeded, stratified `val_fraction`
    split when both splits are asked for, and is packed whole as `train` when only `train` is.
    """
    source, out = Path(source).expanduser(), Path(out).expanduser()
    limit = parse_size(shard_size) if isinstance(shard_size, str) else int(shard_size)
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise UsageError(f"--split takes train and/or val, got {list(splits)}")
    if not source.exists():
        raise MissingPathError(f"{source} does not exist; give an ImageFolder directory or a CIFAR python folder")
    _prepare(out, overwrite)
    class_names, items, skipped, kind = _collect(source, splits, seed, val_fraction)
    index = ShardIndex(class_names, {}, _provenance(source, kind, seed, val_fraction, limit))
    tables = {}
    for split in splits:
        if split == "train":  # one seeded shuffle, so each shard mixes the classes
            order = torch.randperm(len(items[split]), generator=torch.Generator().manual_seed(seed)).tolist()
            items[split] = [items[split][i] for i in order]
        shards, table = write_split(out, split, items[split], limit)
        index.splits[split] = SplitIndex(shards, [{"path": s.path, "reason": s.reason} for s in skipped[split]])
        tables[split] = table
        logger.debug("%s: %d samples in %d shards", split, len(items[split]), len(shards))
    write_index(str(out), index, tables)
    return index


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out} exists and is not empty; choose another --out or add --overwrite")
        for old in out.iterdir():
            if old.is_file() and (old.suffix == ".tar" or old.name.startswith("vitkit-")):
                old.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _provenance(source: Path, kind: str, seed: int, val_fraction: float, limit: int) -> dict[str, Any]:
    from vitkit import __version__

    return {
        "path": str(source.resolve()),
        "kind": kind,
        "seed": seed,
        "val_fraction": val_fraction,
        "shard_size": limit,
        "packed_by": f"vitkit {__version__}",
        "packed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _collect(
    source: Path, splits: Sequence[str], seed: int, val_fraction: float
) -> tuple[list[str], dict[str, list[Item]], dict[str, list[SkippedFile]], str]:
    """Class names, the items of each split, the files left out of each, and what kind of source it was."""
    cifar = find_cifar(source)
    if cifar is not None:
        data = load_cifar(*cifar)
        items = {}
        for split in splits:
            part = getattr(data, split)
            items[split] = [
                Item(f"{split}/{data.class_names[label]}/{i:05d}.png", label, part.size, part.size, pixels=image)
                for i, (image, label) in enumerate(zip(part.images, part.labels.tolist(), strict=True))
            ]
        return data.class_names, items, {split: [] for split in splits}, cifar[1]
    if not source.is_dir():
        raise UsageError(f"{source} is a file but not a CIFAR python archive; give a folder of class sub-folders")
    split_dirs = resolve_split_dirs(source)  # train/ beside val/, valid/, validation/ or test/, as training reads
    if split_dirs is not None:
        folders = dict(zip(("train", "val"), split_dirs, strict=True))
        found = {split: _folder_items(source, folders[split]) for split in splits}
        names = [found[split][0] for split in splits]
        if any(n != names[0] for n in names):
            raise UsageError(f"{source}/train and {source}/val have different class folders; they must match")
        return names[0], {s: found[s][1] for s in splits}, {s: found[s][2] for s in splits}, "imagefolder"
    class_names, every, skipped = _folder_items(source, source)
    if list(splits) == ["train"]:
        return class_names, {"train": every}, {"train": skipped}, "imagefolder"
    labels = torch.tensor([item.label for item in every], dtype=torch.int64)
    train_rows, val_rows = stratified_split(labels, val_fraction, seed)
    parts = {"train": [every[i] for i in train_rows.tolist()], "val": [every[i] for i in val_rows.tolist()]}
    return class_names, {s: parts[s] for s in splits}, {"train": skipped, "val": []}, "imagefolder"


def _folder_items(root: Path, folder: Path) -> tuple[list[str], list[Item], list[SkippedFile]]:
    """The class names of `folder`, its usable images as items (checked at their header), and the rest."""
    files, skipped = scan_classes(folder, None)
    items = []
    for label, name in enumerate(files):
        for path, _, _ in files[name]:
            header = read_header(path)
            if isinstance(header, str):
                skipped.append(SkippedFile(path, header))
                continue
            items.append(Item(os.path.relpath(path, root), label, header[0], header[1], file=path))
    return list(files), items, skipped


def write_split(out: Path, split: str, items: list[Item], limit: int) -> tuple[list[ShardInfo], dict[str, np.ndarray]]:
    """Write `items` as `SPLIT-NNNNNN.tar` shards of about `limit` bytes; their infos and the split's sample table."""
    import webdataset as wds

    pattern = str(out / f"{split}-%06d.tar")
    with wds.ShardWriter(pattern, maxsize=limit, maxcount=10**9, verbose=0, mtime=0.0) as writer:
        for number, item in enumerate(items):
            extension, data = item.encoded()
            writer.write({"__key__": f"{number:0{KEY_DIGITS}d}", extension: data, "cls": item.label})
        count = writer.shard
    shards, shard_col, offset_col, size_col = [], np.zeros(len(items), np.int64), [0] * len(items), [0] * len(items)
    for shard_number in range(count):
        path = out / (pattern % shard_number).rsplit("/", 1)[-1]
        members = 0
        for key, offset, size in image_members(path):
            shard_col[key], offset_col[key], size_col[key] = shard_number, offset, size
            members += 1
        digest, total = sha256_of(str(path))
        shards.append(ShardInfo(path.name, members, total, digest))
    table = {
        "shard": shard_col,
        "offset": np.asarray(offset_col, np.int64),
        "size": np.asarray(size_col, np.int64),
        "label": np.asarray([item.label for item in items], np.int64),
        "width": np.asarray([item.width for item in items], np.int64),
        "height": np.asarray([item.height for item in items], np.int64),
        "path": np.asarray([item.path for item in items], dtype=np.str_),
    }
    return shards, table


def image_members(path: Path | str) -> Iterator[tuple[int, int, int]]:
    """(sample number, byte offset, size) of every image member of a shard written by `write_split`."""
    with tarfile.open(path) as archive:
        for member in archive:
            key, _, extension = member.name.partition(".")
            if member.isfile() and extension != "cls":
                yield int(key), member.offset_data, member.size
