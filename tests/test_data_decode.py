"""Decoding single files: every kind of bad input is refused with a reason, every odd mode comes out RGB."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import BadImageError, SkippedFile, decode_image, load_images
from vitkit.data import decode as decode_module


def write_png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels but holds almost no data (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )


def random_jpeg(path: Path, size: int = 32, seed: int = 0) -> Path:
    """A noisy RGB JPEG (noise so that a truncated copy really lacks data)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def test_truncated_jpeg_is_refused(tmp_path):
    data = random_jpeg(tmp_path / "full.jpg", 64).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="truncated"):
        decode_image(tmp_path / "cut.jpg")


def test_zero_byte_file_is_refused(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match="zero-byte"):
        decode_image(tmp_path / "empty.jpg")


def test_text_named_jpg_is_refused(tmp_path):
    (tmp_path / "notes.jpg").write_text("these are not pixels\n")
    with pytest.raises(BadImageError, match="not an image"):
        decode_image(tmp_path / "notes.jpg")


def test_decompression_bomb_is_refused_at_the_header(tmp_path):
    write_png_header(tmp_path / "bomb.png", 100_000, 100_000)  # 10^10 pixels, over Pillow's hard limit too
    with pytest.raises(BadImageError, match="decompression bomb"):
        decode_image(tmp_path / "bomb.png")
    write_png_header(tmp_path / "big.png", 12_000, 10_000)  # 1.2e8: between 1x and 2x, Pillow itself only warns
    with pytest.raises(BadImageError, match="decompression bomb"):
        decode_image(tmp_path / "big.png")


def test_pixel_limit_is_ours_to_set(tmp_path, monkeypatch):
    random_jpeg(tmp_path / "a.jpg", 64)
    monkeypatch.setattr(decode_module, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImageError, match="64x64 pixels exceeds the limit of 1000"):
        decode_image(tmp_path / "a.jpg")


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 100, (100, 100, 100)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 32896, (128, 128, 128)),
        ("I", 65535, (255, 255, 255)),
        ("I", 200, (200, 200, 200)),
        ("F", 0.5, (128, 128, 128)),
    ],
)
def test_modes_become_rgb(tmp_path, mode, value, expected):
    path = tmp_path / ("x.tif" if mode in ("F", "I", "CMYK") else "x.png")
    Image.new(mode, (8, 6), value).save(path)
    image = decode_image(path)
    assert image.mode == "RGB" and image.size == (8, 6)
    assert np.abs(np.asarray(image).astype(int) - expected).max() <= 1


def test_sixteen_bit_png_keeps_its_gradient(tmp_path):
    ramp = (np.arange(16, dtype=np.uint32).reshape(4, 4) * 4369).astype(np.uint16)  # 0 .. 65535
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    decoded = np.asarray(decode_image(tmp_path / "ramp.png"))[..., 0]
    assert decoded.min() == 0 and decoded.max() == 255
    assert (np.diff(decoded.flatten().astype(int)) > 0).all()  # not clipped to white above level 255


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    red = np.asarray(decode_image(tmp_path / "c.jpg")).astype(int)
    assert np.abs(red - (255, 0, 0)).max() <= 8


def test_palette_with_and_without_transparency(tmp_path):
    palette = Image.new("P", (4, 4))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "p.png")
    pixels = np.asarray(decode_image(tmp_path / "p.png"))
    assert tuple(pixels[0, 0]) == (0, 0, 255) and tuple(pixels[1, 1]) == (255, 0, 0)
    palette.save(tmp_path / "pt.png", transparency=0)  # index 0 (red) transparent -> white background
    pixels = np.asarray(decode_image(tmp_path / "pt.png"))
    assert tuple(pixels[0, 0]) == (0, 0, 255) and tuple(pixels[1, 1]) == (255, 255, 255)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # invisible red
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    rgba.save(tmp_path / "a.png")
    pixels = np.asarray(decode_image(tmp_path / "a.png")).astype(int)
    assert tuple(pixels[0, 0]) == (0, 0, 255)
    assert tuple(pixels[1, 1]) == (255, 255, 255)
    assert np.abs(pixels[0, 1] - 127).max() <= 1
    Image.new("LA", (4, 4), (50, 255)).save(tmp_path / "la.png")
    assert tuple(np.asarray(decode_image(tmp_path / "la.png"))[0, 0]) == (50, 50, 50)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    image.paste((0, 0, 255), (10, 0, 20, 10))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = np.asarray(decode_image(tmp_path / "rotated.jpg")).astype(int)
    assert upright.shape == (20, 10, 3)  # portrait now
    assert np.abs(upright[2, 5] - (255, 0, 0)).max() < 40  # the left half went to the top
    assert np.abs(upright[17, 5] - (0, 0, 255)).max() < 40


def test_load_images_skips_bad_files_and_warns(tmp_path):
    good = [random_jpeg(tmp_path / f"{i}.jpg", 40, seed=i) for i in range(2)]
    (tmp_path / "bad.jpg").write_bytes(b"")
    paths = [good[0], tmp_path / "bad.jpg", good[1]]
    with pytest.warns(UserWarning, match="bad.jpg"):
        batch, kept, skipped = load_images(paths, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    assert kept == [str(good[0]), str(good[1])]
    assert skipped == [SkippedFile(str(tmp_path / "bad.jpg"), "zero-byte file")]


def test_load_images_centre_crops_like_evaluation(tmp_path):
    image = np.zeros((64, 128, 3), dtype=np.uint8)
    image[:, 56:72] = 255  # a white bar in the middle of a wide image
    Image.fromarray(image).save(tmp_path / "wide.png")
    batch, _, _ = load_images([tmp_path / "wide.png"], 28, (0, 0, 0), (1, 1, 1))
    assert batch.shape == (1, 3, 28, 28)
    centre = batch[0, 0, 14]
    assert centre[14] > 0.9 and centre[0] < 0.1 and centre[-1] < 0.1
