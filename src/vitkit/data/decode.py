"""Decoding one image file into an RGB picture, refusing bad input with a reason instead of a crash."""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vitkit.data.normalize import normalize
from vitkit.errors import UsageError

logger = logging.getLogger("vitkit.data")

# Pillow's own default (~89.5 Mpx, a 1 GB RGBA canvas). We check it ourselves before decoding, so a
# decompression bomb is refused at the header instead of only producing a Pillow warning below 2x the limit.
MAX_IMAGE_PIXELS = 89_478_485
CROP_FRACTION = 0.875  # stored and predicted images keep the centre 87.5%, the usual ImageNet evaluation crop
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
_WARN_LIMIT = 10  # the summary warning lists this many files; the log has all of them


class BadImageError(UsageError):
    """A file that cannot be used as an image; the message is the reason."""


@dataclass(frozen=True)
class SkippedFile:
    """An input file left out of a dataset or a prediction, and why."""

    path: str
    reason: str


def decode_image(path: str | os.PathLike, draft: int | None = None) -> Image.Image:
    """Open `path` as an upright RGB image, raising BadImageError(reason) for anything that is not a usable image.

    `draft` (a JPEG's shorter side needed, in pixels): decode at the smallest DCT scale (1/2, 1/4, 1/8) that keeps
    both sides >= `draft` (`Image.draft`), 2-10x faster for photos much larger than the size they are stored at.
    """
    try:
        empty = os.path.getsize(path) == 0
    except OSError as error:
        raise BadImageError(f"unreadable or truncated: {error}") from None
    if empty:
        raise BadImageError("zero-byte file")
    return _decode(path, draft)


def decode_bytes(data: bytes) -> Image.Image:
    """`decode_image` for a file's encoded bytes held in memory (a sample of a tar shard)."""
    if not data:
        raise BadImageError("zero-byte file")
    return _decode(io.BytesIO(data))


def _decode(path: str | os.PathLike | io.BytesIO, draft: int | None = None) -> Image.Image:
    """The one decoding rule behind `decode_image` and `decode_bytes`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_pixels(*image.size)
                if draft and image.format == "JPEG":
                    image.draft(image.mode, (draft, draft))  # both sides stay >= draft, whatever the orientation
                image.load()  # Image.open is lazy: a truncated file only fails here
                return to_rgb(ImageOps.exif_transpose(image))
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError("not an image (Pillow cannot identify the format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImageError(f"decompression bomb refused: {error}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
        raise BadImageError(f"unreadable or truncated: {error}") from None


def check_pixels(width: int, height: int) -> None:
    """Refuse an image whose header promises more than MAX_IMAGE_PIXELS pixels (a decompression bomb)."""
    if width * height > MAX_IMAGE_PIXELS:
        raise BadImageError(
            f"decompression bomb refused: {width}x{height} pixels exceeds the limit of {MAX_IMAGE_PIXELS}"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha composited on white, 16/32-bit and float rescaled to 0-255."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels hold arbitrary colours; dropping alpha would show them, so composite on white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_high_depth_to_uint8(np.asarray(image), mode)).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX


def _high_depth_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Map a 16-bit, 32-bit integer or float grey image to uint8 (Pillow's own convert("L") clips instead)."""
    array = array.astype(np.float64)
    if mode == "F":
        peak = 1.0 if array.max(initial=0.0) <= 1.0 else 255.0
    elif mode.startswith("I;16") or array.max(initial=0) > 255:
        peak = 65535.0  # 16-bit data, also when Pillow widened it to mode "I"
    else:
        peak = 255.0
    return np.clip(np.rint(array * (255.0 / peak)), 0, 255).astype(np.uint8)


def resize_center_crop(image: Image.Image, size: int, crop_fraction: float = CROP_FRACTION) -> Image.Image:
    """Resize the shorter side to round(size / crop_fraction) and cut the centre size x size square."""
    if image.size == (size, size):
        return image
    short = round(size / crop_fraction)
    width, height = image.size
    scale = short / min(width, height)
    new_w, new_h = max(short, round(width * scale)), max(short, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_square(image: Image.Image, size: int) -> Image.Image:
    """The stored form of an image: unchanged when already size x size, else shorter side to `size`, centre crop."""
    return resize_center_crop(image, size, crop_fraction=1.0)


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """An RGB Pillow image as a (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def report_skipped(skipped: Sequence[SkippedFile], where: str) -> None:
    """Log every skipped file and raise one warning naming them, so bad input never passes silently."""
    if not skipped:
        return
    for item in skipped:
        logger.warning("skipped %s: %s", item.path, item.reason)
    listed = "; ".join(f"{item.path} ({item.reason})" for item in skipped[:_WARN_LIMIT])
    more = f"; and {len(skipped) - _WARN_LIMIT} more" if len(skipped) > _WARN_LIMIT else ""
    warnings.warn(f"{where}: skipped {len(skipped)} unusable file(s): {listed}{more}", stacklevel=3)


def load_images(
    paths: Iterable[str | os.PathLike],
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_fraction: float = CROP_FRACTION,
) -> tuple[torch.Tensor, list[str], list[SkippedFile]]:
    """Decode images for prediction: a normalised (B, 3, img_size, img_size) batch, their paths, and the failures.

    Each image is resized so its shorter side is round(img_size / crop_fraction) and centre-cropped, as
    EvalTransform does to stored images; an image already img_size x img_size is used as it is.
    """
    good, kept, skipped = [], [], []
    for path in paths:
        try:
            image = decode_image(path)
        except BadImageError as error:
            skipped.append(SkippedFile(str(path), str(error)))
            continue
        good.append(prediction_pixels(image, img_size, crop_fraction))
        kept.append(str(path))
    report_skipped(skipped, "load_images")
    if not good:
        return torch.empty(0, 3, img_size, img_size), kept, skipped
    return normalize_pixels(torch.stack(good), mean, std), kept, skipped


def prediction_pixels(image: Image.Image, img_size: int, crop_fraction: float = CROP_FRACTION) -> torch.Tensor:
    """An RGB image as the (3, img_size, img_size) uint8 pixels prediction classifies (resize, centre crop)."""
    return pil_to_uint8(resize_center_crop(image, img_size, crop_fraction))


def normalize_pixels(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """A (B, C, H, W) uint8 batch as the normalised float32 batch a model takes (`vitkit.data.normalize`)."""
    return normalize(pixels.float().div_(255), mean, std)


def is_image_name(path: str | Path) -> bool:
    """Whether a file name has one of the image extensions ImageFolder reads."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)
