"""`vitkit train` against timm's own `train.py` on the same work: model, data, batch, augmentation and precision.

The issue's command: ViT-Ti with 4x4 patches at 32x32 (timm: `vit_tiny_patch16_224 --model-kwargs patch_size=4
img_size=32`), 4,500 of the 5,000 images of `../shared/data/cifar10/val` to train on (a seeded 90/10 split,
linked into one train/val folder both read), batch 128, RandAugment 2/9 (timm: `rand-m9-mstd0.5`), AdamW lr 1e-3
wd 0.05, no Mixup/CutMix, 2 epochs. Precision: what `vitkit train` chooses with no flags (bf16 autocast where it
measures bf16 faster, else fp32; `--precision` forces one on both), and timm with the same (`--amp --amp-dtype
bfloat16`, or no `--amp`). Each trainer gets the whole machine (timm with its 2 loader workers, vitkit with its
defaults), one after the other, alternating for `--rounds` rounds. timm runs twice a round: as installed (its
attention through torch's `scaled_dot_product_attention`, whose CPU kernel torch picks) and with
`TIMM_FUSED_ATTN=0` (timm's explicit matmul + softmax path, the same computation as vitkit's `eager` kernel), so
the ratio is shown against both.
The rate is the median over the second epoch of each trainer's logged
per-update images/s (timm: `Train:` lines at `--log-interval 5`, the update's time including its data wait;
vitkit: `metrics.csv` step rows at `--log-every 5`, the same).

Needs timm beside the venv's torch (`../shared/tools/timm-site.sh`); exits with a message where it is absent.

    .venv/bin/python benchmarks/speed/timm_side_by_side.py [--rounds 2] [--precision fp32]
        [--data ../shared/data/cifar10/val]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO.parent / "shared" / "tools"
TIMM_RATE = re.compile(r"Train: (\d+) \[.*?Time: [\d.]+s,\s+([\d.]+)/s")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10" / "val"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch's rate is reported")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], help="force both to this precision (default: vitkit's `auto`)"
    )
    return parser.parse_args()


def split_folder(source: Path, root: Path, val_share: float = 0.1, seed: int = 0) -> Path:
    """root/{train,val}/<class>/ with symlinks to a seeded 90/10 split of source/<class>/*.jpg."""
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(class_dir.iterdir())
        random.Random(f"{seed}-{class_dir.name}").shuffle(files)
        cut = round(len(files) * val_share)
        for split, chunk in (("val", files[:cut]), ("train", files[cut:])):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for file in chunk:
                (target / file.name).symlink_to(file.resolve())
    return root


def vitkit_rate(data: Path, out: Path, epochs: int, precision: str | None = None) -> tuple[float, str]:
    """Median logged images/s over the last epoch of `vitkit train` with no machine flags (or only `precision`),
    and the precision it ran in."""
    command = [
        sys.executable, "-m", "vitkit", "train", "--data", str(data), "--model", "Ti/4", "--img-size", "32",
        "--epochs", str(epochs), "--batch-size", "128", "--crop", "pad", "--randaugment-n", "2",
        "--randaugment-m", "9", "--mixup", "0", "--cutmix", "0", "--label-smoothing", "0.1", "--lr", "1e-3",
        "--weight-decay", "0.05", "--log-every", "5", "--no-progress", "--out", str(out), "--overwrite",
    ]  # fmt: skip
    if precision:
        command += ["--precision", precision]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(out / "metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] == "step" and int(r["epoch"]) == epochs]
    precision = json.loads((out / "summary.json").read_text())["precision"]
    return statistics.median(float(r["images_per_s"]) for r in rows), precision


def timm_rate(data: Path, out: Path, epochs: int, precision: str, site: str, fused_attn: bool = True) -> float:
    """Median logged images/s over the last epoch of timm's train.py on the same work (`fused_attn`: timm's
    default attention through SDPA, else its explicit path)."""
    amp = ["--amp", "--amp-dtype", "bfloat16"] if precision == "bf16" else []
    command = [
        sys.executable, str(TOOLS / "timm_train.py"), "--data-dir", str(data), "--train-split", "train",
        "--val-split", "val", "--model", "vit_tiny_patch16_224", "--model-kwargs", "patch_size=4", "img_size=32",
        "--num-classes", "10", "--img-size", "32", "--device", "cpu", *amp, "--batch-size", "128",
        "--epochs", str(epochs), "--warmup-epochs", "0", "--workers", "2", "--aa", "rand-m9-mstd0.5",
        "--reprob", "0", "--smoothing", "0.1", "--opt", "adamw", "--lr", "1e-3", "--weight-decay", "0.05",
        "--no-prefetcher", "--log-interval", "5", "--output", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": site, "TIMM_FUSED_ATTN": "1" if fused_attn else "0"}
    log = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    rates = [float(m[2]) for m in TIMM_RATE.finditer(log.stdout + log.stderr) if int(m[1]) == epochs - 1]
    if not rates:
        raise SystemExit(f"no 'Train:' lines for epoch {epochs - 1} in timm's log:\n{log.stderr[-2000:]}")
    return statistics.median(rates[1:] or rates)  # the first update of an epoch waits for the loader to start


def main() -> None:
    args = parse_args()
    if not (TOOLS / "timm-site.sh").is_file():
        raise SystemExit(f"{TOOLS}/timm-site.sh not found: this benchmark needs ../shared/tools")
    env = {**os.environ, "PYTHON": sys.executable}
    built = subprocess.run([str(TOOLS / "timm-site.sh")], check=True, capture_output=True, text=True, env=env)
    site = built.stdout.strip().splitlines()[-1]
    with tempfile.TemporaryDirectory() as scratch:
        data = split_folder(Path(args.data), Path(scratch) / "data")
        results = []
        for round_ in range(args.rounds):
            ours, precision = vitkit_rate(data, Path(scratch) / f"vitkit{round_}", args.epochs, args.precision)
            theirs = timm_rate(data, Path(scratch) / f"timm{round_}", args.epochs, precision, site)
            eager = timm_rate(data, Path(scratch) / f"timm_eager{round_}", args.epochs, precision, site, False)
            results.append((ours, theirs, eager, precision))
            print(f"round {round_ + 1}: vitkit {ours:.1f} images/s, timm {theirs:.1f} images/s, timm with "
                  f"TIMM_FUSED_ATTN=0 {eager:.1f} ({precision}): {ours / theirs:.2f}x, {ours / eager:.2f}x",
                  flush=True)  # fmt: skip
    print("\n| round | precision | vitkit train images/s | timm train.py images/s | ratio | timm, TIMM_FUSED_ATTN=0 "
          "| ratio |\n|---|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for index, (ours, theirs, eager, precision) in enumerate(results, 1):
        print(f"| {index} | {precision} | {ours:.1f} | {theirs:.1f} | **{ours / theirs:.2f}x** | {eager:.1f} "
              f"| {ours / eager:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
