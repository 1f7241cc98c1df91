"""Decode speed of an image folder with and without JPEG draft (DCT scaling), at the size a run stores.

    python benchmarks/speed/decode_draft.py --data ../shared/data/imagenette-160/train --img-size 128 --limit 1000
    python benchmarks/speed/decode_draft.py --make /tmp/photos500 --count 600   # generated 400-500 px JPEGs first

Single process (`torch.set_num_threads(1)`); each mode runs once over the same files, page cache warmed first.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitkit.data.decode import CROP_FRACTION, is_image_name
from vitkit.data.imagefolder import decode_chunk


def make_photos(root: Path, count: int, seed: int = 0) -> Path:
    """`count` JPEGs (quality 90) of 400-500 px sides with photo-like texture (smoothed noise), in 10 classes."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        width, height = (int(x) for x in rng.integers(400, 501, size=2))
        small = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        path = root / f"c{index % 10}" / f"{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a folder of images (searched recursively)")
    parser.add_argument("--make", type=Path, help="generate 400-500 px JPEGs here and measure them")
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--img-size", type=int, default=128, help="training size; stored at round(size / 0.875)")
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = make_photos(args.make, args.count) if args.make else args.data
    paths = sorted(str(p) for p in root.rglob("*") if is_image_name(p))
    random.Random(0).shuffle(paths)
    paths = paths[: args.limit]
    for path in paths:
        Path(path).read_bytes()  # warm the page cache: the measure is decoding, not the disk
    size = round(args.img_size / CROP_FRACTION)
    sides = [min(Image.open(p).size) for p in paths[:200]]
    result = {"data": str(root), "images": len(paths), "median_short_side": int(np.median(sides)), "stored": size}
    for draft in (False, True):
        start = time.perf_counter()
        images, _ = decode_chunk(paths, size, draft=draft)
        seconds = time.perf_counter() - start
        result[f"{'draft' if draft else 'full'}_images_per_s"] = round(len(paths) / seconds, 1)
    result["speedup"] = round(result["draft_images_per_s"] / result["full_images_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
