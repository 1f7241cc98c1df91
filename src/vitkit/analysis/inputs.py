"""What `vitkit analyze` reads: the images (files or a dataset), prepared as `vitkit.inference` says.

Decoding is `vitkit.data`'s (EXIF orientation, every mode to RGB, bad files named); square inputs take its
evaluation resize and centre crop, and non-square inputs are cropped to their aspect ratio here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vitkit.data import normalize as normalize_module
from vitkit.errors import MissingPathError, UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def dataset_images(data: str | Path, count: int, folder: Path, img_size: int) -> list[Path]:
    """`count` images named by --data: picked from an ImageFolder tree, or exported from CIFAR / digits to `folder`."""
    if count < 1:
        raise UsageError(f"--num-images must be at least 1, got {count}")
    if str(data) != "digits" and not Path(data).exists():
        raise MissingPathError(f"dataset {data} not found: give an ImageFolder directory, a CIFAR folder or 'digits'")
    if Path(data).is_dir() and _class_folders(Path(data)):
        return pick_dataset_images(data, count)
    return export_dataset_images(data, count, folder, img_size)


def pick_dataset_images(root: str | Path, count: int) -> list[Path]:
    """`count` images from an ImageFolder tree (root/<class>/<image>), taken round-robin over sorted classes.

    Deterministic (sorted names) and spread across classes: the first image of every class, then the second...
    A folder holding `val/` (or `test/`) but no class folders is read from that split.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingPathError(f"dataset folder {root} not found")
    if count < 1:
        raise UsageError(f"--num-images must be at least 1, got {count}")
    per_class = _class_folders(root)
    if not per_class:
        raise UsageError(f"no images found in {root}: expected an ImageFolder layout, {root}/<class>/<image>.jpg")
    return _round_robin(per_class, count)


def _class_folders(root: Path) -> list[list[Path]]:
    """The image files per class of an ImageFolder tree at `root`, or of its val/ or test/ split."""
    for folder in (root, root / "val", root / "test"):
        if folder.is_dir():
            per_class = _images_by_class(folder)
            if per_class:
                return per_class
    return []


def export_dataset_images(data: str | Path, count: int, folder: Path, img_size: int) -> list[Path]:
    """CIFAR-10/100 (pickle folder or .tar.gz) or "digits": write `count` validation images as PNGs in `folder`.

    The pick is the same round-robin over classes as for folders (first image of each class in file order,
    then the second...). The files make the inputs of the report visible and keep one path-based pipeline.
    """
    from PIL import Image

    from vitkit.data import DataConfig, load_dataset
    from vitkit.data.cifar import find_cifar

    if str(data) != "digits" and find_cifar(data) is None:
        raise UsageError(
            f"no images found in {data}: expected an ImageFolder layout ({data}/<class>/<image>.jpg), "
            "a CIFAR-10/100 python folder or .tar.gz, or 'digits'"
        )
    val = load_dataset(DataConfig(path=str(data), img_size=img_size)).val
    by_class = [np.flatnonzero(val.labels.numpy() == c).tolist() for c in range(val.num_classes)]
    picks = _round_robin([indices for indices in by_class if indices], count)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for rank, index in enumerate(picks):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", val.class_names[int(val.labels[index])])
        paths.append(folder / f"{rank:03d}_{name}_{index}.png")
        Image.fromarray(val.images[index].permute(1, 2, 0).numpy()).save(paths[-1])
    return paths


def _round_robin(groups: Sequence[Sequence], count: int) -> list:
    """Up to `count` items: the first of every group, then the second of every group, and so on."""
    picks: list = []
    for index in range(max((len(group) for group in groups), default=0)):
        picks.extend(group[index] for group in groups if index < len(group))
        if len(picks) >= count:
            break
    return picks[:count]


def _images_by_class(root: Path) -> list[list[Path]]:
    """Sorted image files of each sorted class folder of `root` (classes without images left out)."""
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    found = [sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()) for c in classes]
    return [files for files in found if files]


def load_images(
    paths: Sequence[Path], img_size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, list[Path], list[tuple[Path, str]]]:
    """Decode, fit and normalise images into a (B, 3, H, W) batch; unreadable ones come back as (path, reason).

    Square sizes take `vitkit.data.load_images` (the evaluation resize and centre crop); other sizes are
    centre-cropped to the target aspect ratio and resized.
    """
    from vitkit.data import BadImageError, decode_image
    from vitkit.data import load_images as load_square_images

    if img_size[0] == img_size[1]:
        batch, kept, skipped = load_square_images([str(p) for p in paths], img_size[0], mean, std)
        return batch, [Path(p) for p in kept], [(Path(s.path), s.reason) for s in skipped]
    arrays, good, skipped = [], [], []
    for path in paths:
        try:
            image = decode_image(path)
        except BadImageError as error:
            skipped.append((Path(path), str(error)))
            continue
        arrays.append(np.asarray(fit_image(image, img_size), dtype=np.float32) / 255.0)
        good.append(Path(path))
    if not arrays:
        return torch.empty(0, 3, *img_size), good, skipped
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return normalize_module.normalize(batch.float(), mean, std), good, skipped


def fit_image(image, size: tuple[int, int]):  # PIL.Image.Image -> PIL.Image.Image
    """Cut the largest centred region with the aspect ratio of `size` (height, width), then resize to it."""
    from PIL import Image

    width, height = image.size
    scale = min(width / size[1], height / size[0])
    crop_w, crop_h = round(size[1] * scale), round(size[0] * scale)
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    box = (left, top, left + crop_w, top + crop_h)
    return image.resize((size[1], size[0]), Image.Resampling.BICUBIC, box=box)


def denormalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(B, C, H, W) normalised batch -> (B, H, W, C) floats in [0, 1] for display."""
    pixels = normalize_module.denormalize(batch.detach().float().cpu(), mean, std)
    return pixels.clamp(0, 1).permute(0, 2, 3, 1).numpy()
