"""ImageFolder datasets (root/<class>/<image>, optionally under train/ and val/): scan, check, decode once, cache."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vitkit.data import decode
from vitkit.data.cache import cache_path, cache_root, content_key, load_entry, save_entry
from vitkit.data.config import DataConfig
from vitkit.data.decode import (
    CROP_FRACTION,
    BadImageError,
    SkippedFile,
    check_pixels,
    decode_image,
    is_image_name,
    to_square,
)
from vitkit.data.sources import DatasetSplits, FileSource, ImageSource, TensorSource
from vitkit.errors import UsageError

logger = logging.getLogger("vitkit.data")

_CHUNK = 256  # files per worker task: large enough to amortise inter-process transfer, small enough to balance


HELD_OUT_NAMES = ("val", "valid", "validation", "test")  # what exports call the held-out split (HF imagefolder too)
VALIDATION_NAMES = HELD_OUT_NAMES[:3]  # preferred over test/ when both exist (Roboflow: train/ valid/ test/)


def resolve_split_dirs(
    root: Path, train_split: str | None = None, val_split: str | None = None
) -> tuple[Path, Path] | None:
    """The (train, held-out) folders of a pre-split ImageFolder at `root`, or None when it is not pre-split.

    The held-out folder is chosen by `choose_splits`. A train/ with no held-out folder is refused: read as a class
    folder it would silently become a class named "train".
    """
    present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    chosen = choose_splits(present, train_split, val_split, str(root), "folder")
    if chosen is None:
        return None
    train_name, held_out = chosen
    if held_out is None:
        raise UsageError(
            f"{root} has a {train_name}/ folder but no held-out folder ({', '.join(f'{n}/' for n in HELD_OUT_NAMES)}); "
            f"name yours with --val-split NAME, or give {root / train_name} as the path to split it by val_fraction"
        )
    return root / train_name, root / held_out


def choose_splits(
    present: Sequence[str], train_split: str | None, val_split: str | None, where: str, kind: str
) -> tuple[str, str | None] | None:
    """The (train, held-out) names among the splits `present` (folders, or a Hugging Face dataset's splits).

    None when there is no train split; the held-out name is None when there is none. It is `val_split` when given,
    else the one of val, valid, validation that exists, else test (said in the log; a test beside a validation
    split is left out and the log says so). More than one validation name is refused: which one is meant cannot be
    guessed. `kind` ("folder" or "split") words the messages.
    """
    shown = (lambda name: f"{name}/") if kind == "folder" else (lambda name: f"'{name}'")  # noqa: E731
    train_name = train_split or "train"
    named = (("train", train_name), ("val", val_split)) if train_split or val_split else ()
    for flag, name in named:
        if name is not None and name not in present:
            raise UsageError(
                f"--{flag}-split {name}: {where} has no {kind} {shown(name)} (it has: {', '.join(present) or 'none'})"
            )
    if train_name not in present:
        return None
    if val_split is not None:
        return train_name, val_split
    validation = [n for n in VALIDATION_NAMES if n in present]
    if len(validation) > 1:
        raise UsageError(
            f"{where} has several held-out {kind}s ({', '.join(shown(n) for n in validation)}); say which one to "
            f"validate on with --val-split NAME (recipe: data.val_split)"
        )
    held_out = validation or [n for n in HELD_OUT_NAMES[3:] if n in present]
    if not held_out:
        return train_name, None
    if held_out[0] != "val":
        left_out = f" ({shown('test')} is left out)" if "test" in present and held_out[0] != "test" else ""
        logger.info("%s: validating on %s, the held-out %s it has%s", where, shown(held_out[0]), kind, left_out)
    return train_name, held_out[0]


def has_split_folders(root: Path) -> bool:
    """True when `root` holds a train folder and a held-out one (`resolve_split_dirs` with the default names)."""
    return resolve_split_dirs(root) is not None


FLAT_CLASS = "images"  # the one class of a flat folder of unlabelled images
FileStat = tuple[str, int, int]  # (path, size in bytes, mtime in ns): what the cache key is made of


def scan_classes(folder: Path, limit: int | None) -> tuple[dict[str, list[FileStat]], list[SkippedFile]]:
    """Map each class sub-folder of `folder` to its image files (recursive, sorted); other files are skipped.

    A flat folder of images (no sub-folders) is one pseudo-class, FLAT_CLASS: unlabelled data for
    self-supervised pre-training (supervised training refuses a single class).
    """
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        files, skipped = image_files(_walk(str(folder)), limit)
        if files:
            return {FLAT_CLASS: files}, skipped
        raise UsageError(
            f"{folder} has no class sub-folders; an ImageFolder dataset needs one sub-folder per class "
            f"({folder}/<class>/<image>.jpg), or train/ and val/ folders that each hold such class sub-folders"
        )
    files, skipped = {}, []
    for name in classes:
        files[name], rejected = image_files(_walk(str(folder / name)), limit)
        skipped += rejected
    return files, skipped


def image_files(entries: list[os.DirEntry], limit: int | None) -> tuple[list[FileStat], list[SkippedFile]]:
    """The image files among `entries` (the first `limit`), and the other files as skipped."""
    found, skipped = [], []
    for entry in entries:
        if is_image_name(entry.name):
            info = entry.stat()
            found.append((entry.path, info.st_size, info.st_mtime_ns))
        else:
            skipped.append(SkippedFile(entry.path, "not an image file extension"))
    return (found[:limit] if limit else found), skipped


def _walk(directory: str) -> list[os.DirEntry]:
    """Files under `directory` in sorted order, recursively; hidden files and folders (.DS_Store) are not data."""
    entries = sorted((e for e in os.scandir(directory) if not e.name.startswith(".")), key=lambda e: e.name)
    found = []
    for entry in entries:
        if entry.is_dir():
            found += _walk(entry.path)
        elif entry.is_file():
            found.append(entry)
    return found


def check_same_classes(train: Sequence[str], val: Sequence[str], train_dir: Path, val_dir: Path) -> None:
    """Raise a UsageError naming the classes that only one of the train and held-out folders has."""
    if list(train) != list(val):
        only_train = sorted(set(train) - set(val))
        only_val = sorted(set(val) - set(train))
        raise UsageError(
            f"{train_dir} and {val_dir} have different class folders (only in {train_dir.name}: {only_train}; only in "
            f"{val_dir.name}: {only_val}); both need the same class sub-folders so labels mean the same thing in each"
        )


def stored_size(sizes: np.ndarray, img_size: int) -> int:
    """The square size images are stored at: their own if all share one square size no larger than
    round(img_size / 0.875) (CIFAR's 32), else round(img_size / 0.875), reached by a shorter-side resize and
    centre crop, so EvalTransform's 87.5% centre crop lands exactly on img_size."""
    target = round(img_size / CROP_FRACTION)
    if len(sizes) and (sizes == sizes[0]).all() and sizes[0, 0] == sizes[0, 1] and sizes[0, 0] <= target:
        return int(sizes[0, 0])
    return target


def read_header(path: str | bytes) -> tuple[int, int] | str:
    """(width, height) from the header of a file (or of its encoded bytes), or the reason it is unusable (no pixel
    decoding)."""
    try:
        if (len(path) if isinstance(path, bytes) else os.path.getsize(path)) == 0:
            return "zero-byte file"
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:
            width, height = image.size
        check_pixels(width, height)
    except BadImageError as error:
        return str(error)
    except Image.DecompressionBombError as error:
        return f"decompression bomb refused: {error}"
    except Exception as error:  # UnidentifiedImageError, OSError, SyntaxError: all mean "not a usable image"
        return f"not an image (Pillow cannot identify the format): {type(error).__name__}"
    return width, height


def decode_chunk(paths: Sequence[str], size: int, draft: bool = True) -> tuple[torch.Tensor, list[str]]:
    """Decode files to a uint8 (K, 3, size, size) tensor of the good ones, and a reason per file ("" when good).

    With `draft` a JPEG is decoded at the smallest DCT scale whose shorter side is still >= `size`, then resized.
    """
    good, reasons = [], []
    for path in paths:
        try:
            good.append(np.asarray(to_square(decode_image(path, size if draft else None), size), dtype=np.uint8))
            reasons.append("")
        except BadImageError as error:
            reasons.append(str(error))
    if not good:
        return torch.empty(0, 3, size, size, dtype=torch.uint8), reasons
    return torch.from_numpy(np.stack(good)).permute(0, 3, 1, 2).contiguous(), reasons


def _headers_chunk(paths: Sequence[str]) -> list[tuple[int, int] | str]:
    return [read_header(p) for p in paths]


class _Chunks(Dataset):
    """Item i is fn(chunk i of items): lets a DataLoader's worker processes do any per-file work in parallel."""

    def __init__(self, fn: Callable[..., Any], items: Sequence[str], *args: Any) -> None:
        self.fn, self.items, self.args = fn, items, args

    def __len__(self) -> int:
        return (len(self.items) + _CHUNK - 1) // _CHUNK

    def __getitem__(self, index: int) -> Any:
        return self.fn(self.items[index * _CHUNK : (index + 1) * _CHUNK], *self.args)


def parallel_chunks(fn: Callable[..., Any], items: Sequence[str], num_workers: int, *args: Any) -> list[Any]:
    """fn applied to consecutive chunks of `items`, in order, by `num_workers` processes (0: in this process)."""
    task = _Chunks(fn, items, *args)
    if num_workers <= 0 or len(task) <= 1:
        return [task[i] for i in range(len(task))]
    loader = DataLoader(task, batch_size=None, num_workers=min(num_workers, len(task)), prefetch_factor=4)
    return list(loader)


def load_imagefolder(root: Path, config: DataConfig) -> tuple[DatasetSplits, bool]:
    """Load an ImageFolder dataset; returns the splits and whether the decoded images came from the cache."""
    skipped: list[SkippedFile] = []
    split_dirs = resolve_split_dirs(root, config.train_split, config.val_split)
    if split_dirs is not None:
        train_dir, val_dir = split_dirs
        train_files, train_skipped = scan_classes(train_dir, config.limit_per_class)
        val_files, val_skipped = scan_classes(val_dir, config.limit_per_class)
        check_same_classes(list(train_files), list(val_files), train_dir, val_dir)
        skipped += train_skipped + val_skipped
        groups = [(train_dir, train_files, 0), (val_dir, val_files, 1)]
    else:
        files, skipped = scan_classes(root, config.limit_per_class)
        groups = [(root, files, -1)]
    class_names = list(groups[0][1])
    paths, labels, split, folders, stats = [], [], [], [], []
    for folder, files, tag in groups:
        for label, name in enumerate(class_names):
            paths += [path for path, _, _ in files[name]]
            stats += [(path[len(str(root)) + 1 :], size, mtime) for path, size, mtime in files[name]]
            labels += [label] * len(files[name])
            split += [tag] * len(files[name])
            folders.append((folder / name, label, tag))
    labels_t, split_t = torch.tensor(labels, dtype=torch.int64), torch.tensor(split, dtype=torch.int64)

    # Keyed by content and the largest size the run reads (training or evaluation); JPEGs are decoded with draft.
    key = content_key(
        stats,
        {"source": "imagefolder", "img_size": config.decode_size, "max_pixels": decode.MAX_IMAGE_PIXELS, "draft": 1},
    )
    cache = cache_root(config.cache_dir)
    index = load_entry(cache_path(cache, "index", key))
    if index is None:
        results = [r for chunk in parallel_chunks(_headers_chunk, paths, config.num_workers) for r in chunk]
        good = [r for r in results if not isinstance(r, str)]
        index = {
            "bad": {i: r for i, r in enumerate(results) if isinstance(r, str)},
            "size": stored_size(np.array(good, dtype=np.int64).reshape(-1, 2), config.decode_size),
        }
        save_entry(cache_path(cache, "index", key), index)
    size = int(index["size"])
    kept = torch.ones(len(paths), dtype=torch.bool)
    kept[list(index["bad"])] = False
    skipped += [SkippedFile(paths[i], reason) for i, reason in index["bad"].items()]
    check_classes_nonempty(folders, labels_t[kept], split_t[kept], skipped)

    fits = int(kept.sum()) * 3 * size * size <= config.max_memory_gb * 2**30
    from_cache = False
    if fits:
        images, decode_failures, from_cache = _decoded_images(paths, kept, size, config, cache, key)
        skipped += [SkippedFile(paths[i], reason) for i, reason in decode_failures.items()]
        kept[list(decode_failures)] = False
        check_classes_nonempty(folders, labels_t[kept], split_t[kept], skipped)
        source: Callable[[torch.Tensor], ImageSource] = lambda rows: TensorSource(  # noqa: E731
            _select(images, kept, rows), labels_t[rows], class_names
        )
    else:
        logger.info("%s: %d images at %dpx exceed max_memory_gb; streaming", root, int(kept.sum()), size)
        source = lambda rows: FileSource(  # noqa: E731
            [paths[i] for i in rows.tolist()], labels_t[rows], class_names, size, config.num_workers
        )

    rows = torch.nonzero(kept).flatten()
    if groups[0][2] == 0:
        train_rows, val_rows = rows[split_t[rows] == 0], rows[split_t[rows] == 1]
    else:
        train_at, val_at = stratified_split(labels_t[rows], config.val_fraction, config.seed)
        train_rows, val_rows = rows[train_at], rows[val_at]
    return DatasetSplits(source(train_rows), source(val_rows), class_names, skipped), from_cache


def _select(images: torch.Tensor, kept: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The decoded images of file `rows` (`images` holds only the kept files, in order).

    A contiguous run (train/ or val/ of a pre-split folder) is a view, so a memory-mapped cache entry is
    read lazily instead of copied up front.
    """
    positions = (torch.cumsum(kept.long(), 0) - 1)[rows]
    if len(positions) and int(positions[-1] - positions[0]) == len(positions) - 1:
        return images[int(positions[0]) : int(positions[-1]) + 1]
    return images[positions]


def _decoded_images(
    paths: list[str], kept: torch.Tensor, size: int, config: DataConfig, cache: Path, key: str
) -> tuple[torch.Tensor, dict[int, str], bool]:
    """uint8 images of the files that decode (from the cache when present) and {file row: reason} of the others.

    Rows of the tensor are the files with kept=True that decoded, in file order.
    """
    location = cache_path(cache, "images", key)
    entry = load_entry(location)
    if entry is not None:
        return entry["images"], entry["bad"], True
    todo = [p for p, k in zip(paths, kept.tolist(), strict=True) if k]
    chunks = parallel_chunks(decode_chunk, todo, config.num_workers, size)
    images = torch.cat([c[0] for c in chunks]) if chunks else torch.empty(0, 3, size, size, dtype=torch.uint8)
    rows = torch.nonzero(kept).flatten().tolist()  # header failures are reported already
    bad = {row: reason for row, reason in zip(rows, (r for c in chunks for r in c[1]), strict=True) if reason}
    save_entry(location, {"images": images, "bad": bad})
    return images, bad, False


def check_classes_nonempty(
    folders: list[tuple[Path, int, int]], labels: torch.Tensor, split: torch.Tensor, skipped: list[SkippedFile]
) -> None:
    """Raise a UsageError naming every class folder that has no usable image."""
    counts = torch.bincount(labels * 3 + split + 1, minlength=3 * max(label for _, label, _ in folders) + 3).tolist()
    empty = [str(folder) for folder, label, tag in folders if counts[label * 3 + tag + 1] == 0]
    if empty:
        raise UsageError(
            f"class folder(s) with no valid images: {', '.join(empty)} ({len(skipped)} file(s) were skipped as "
            "unreadable); add images to them or remove the folders so the classes are dropped"
        )


def held_out_count(class_size: int, val_fraction: float) -> int:
    """Images of a class of `class_size` that `stratified_split` holds out: round(n * val_fraction), at least 1 when
    the class has 2+, and never the whole class."""
    return min(max(round(class_size * val_fraction), 1), class_size - 1) if class_size > 1 else 0


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded per-class split: `held_out_count` of each class is held out."""
    val, train = stratified_draw(labels, lambda n: held_out_count(n, val_fraction), seed)
    return train, val


def stratified_draw(labels: torch.Tensor, count: Callable[[int], int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded per-class draw of `count(n)` of each class's n rows; returns the drawn rows and the rest, sorted."""
    generator = torch.Generator().manual_seed(seed)
    drawn, rest = [], []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        drawn.append(members[: count(len(members))])
        rest.append(members[count(len(members)) :])
    return torch.cat(drawn).sort().values, torch.cat(rest).sort().values
