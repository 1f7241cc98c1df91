"""vitkit's batched augmentations against kornia.augmentation's, per operation, on the CPU (the training device).

Usage: python benchmarks/speed/augment_speed.py [--repeats 15] [--threads 1]

Each cell is the median wall time (ms) of one call on a fresh uint8 batch, uint8 -> float conversion and
the drawing of the random parameters included, at two shapes: batch 128 at 32 px (CIFAR) and batch 64 at
160 px. vitkit and kornia calls alternate (A, B, A, B, ...) so that load drift hits both alike. kornia is
not a vitkit dependency (see vitkit/data/augment.py for the decision): `pip install kornia` to run this.
The operations are matched as closely as the two libraries allow: kornia's RandomErasing fills a constant
where vitkit draws per-pixel noise, its MixUp draws lambda per image, and its RandAugment one operation set
per batch.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description, paired_median_seconds  # noqa: E402
from vitkit.data import AugmentConfig  # noqa: E402
from vitkit.data import augment as A  # noqa: E402

SHAPES = ((128, 32), (64, 160))
CONFIG = AugmentConfig()  # the DeiT defaults: RRC (0.08, 1), flip, RandAugment 2/9, Mixup 0.8 / CutMix 1.0


def vitkit_ops(size: int, num_classes: int) -> dict[str, Callable[[torch.Tensor, torch.Tensor], object]]:
    """vitkit's operations as f(uint8 images, one-hot targets)."""
    randaugment = A.RandAugment(CONFIG.randaugment_n, CONFIG.randaugment_m)
    mixup = AugmentConfig(mixup=CONFIG.mixup, cutmix=0.0)
    cutmix = AugmentConfig(mixup=0.0, cutmix=CONFIG.cutmix)

    def as_float(images: torch.Tensor) -> torch.Tensor:
        return images.float().div_(255)

    def mixing(config: AugmentConfig) -> Callable[[torch.Tensor, torch.Tensor], object]:
        return lambda x, t: A.mix(as_float(x), t, A.draw_mix(config, size, size), A.mix_partners(0, x.shape[0]))

    return {
        "resized crop + flip": lambda x, t: A.warp(as_float(x), A.crop_flip_theta(x.shape[0], CONFIG, size), size),
        "random erasing": lambda x, t: A.random_erase(as_float(x), 0.25),
        "mixup": mixing(mixup),
        "cutmix": mixing(cutmix),
        f"RandAugment n={CONFIG.randaugment_n} m={CONFIG.randaugment_m}": lambda x, t: randaugment(as_float(x)),
    }


def kornia_ops(size: int) -> dict[str, Callable[[torch.Tensor, torch.Tensor], object]]:
    """kornia's closest counterparts, same order."""
    import kornia.augmentation as K
    from kornia.augmentation.auto import RandAugment

    crop = torch.nn.Sequential(
        K.RandomResizedCrop((size, size), scale=CONFIG.rrc_scale, ratio=CONFIG.rrc_ratio), K.RandomHorizontalFlip()
    )
    erase = K.RandomErasing(p=0.25, scale=A.ERASE_AREA, ratio=A.ERASE_RATIO)
    mixup = K.RandomMixUpV2(data_keys=["input", "class"])
    cutmix = K.RandomCutMixV2(data_keys=["input", "class"], use_correct_lambda=True)
    randaugment = RandAugment(n=CONFIG.randaugment_n, m=CONFIG.randaugment_m)
    labels = lambda t: t.argmax(1)  # noqa: E731

    def as_float(images: torch.Tensor) -> torch.Tensor:
        return images.float().div_(255)

    return {
        "resized crop + flip": lambda x, t: crop(as_float(x)),
        "random erasing": lambda x, t: erase(as_float(x)),
        "mixup": lambda x, t: mixup(as_float(x), labels(t)),
        "cutmix": lambda x, t: cutmix(as_float(x), labels(t)),
        "RandAugment": lambda x, t: randaugment(as_float(x)),
    }


def main() -> None:
    """Print one row per operation: vitkit and kornia milliseconds at each shape."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import kornia
    except ImportError:
        raise SystemExit("kornia is not installed (it is not a vitkit dependency): pip install kornia") from None
    print(f"{machine_description()}; kornia {kornia.__version__}")
    print(f"median of {args.repeats} calls, ms, uint8 -> float included")
    results: dict[str, list[tuple[float, float]]] = {}
    for batch, size in SHAPES:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
        targets = torch.nn.functional.one_hot(torch.arange(batch) % 10, 10).float()
        ours, theirs = vitkit_ops(size, 10), kornia_ops(size)
        for (name, mine), other in zip(ours.items(), theirs.values(), strict=True):
            calls = (functools.partial(fn, images, targets) for fn in (mine, other))
            results.setdefault(name, []).append(paired_median_seconds(*calls, args.repeats))
    header = "".join(f"{f'{b} x {s} px: vitkit / kornia':>32}" for b, s in SHAPES)
    print(f"{'operation':<24}{header}")
    for name, pairs in results.items():
        cells = "".join(f"{f'{1e3 * a:8.1f} / {1e3 * b:8.1f}':>32}" for a, b in pairs)
        print(f"{name:<24}{cells}")


if __name__ == "__main__":
    main()
