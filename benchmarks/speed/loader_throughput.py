"""Loader throughput (decode + augmentation, images/s): packed shards against the same images in a folder, with a
cold and a warm page cache; and the data-wait share of a short `vitkit train` on each.

Usage: python benchmarks/speed/loader_throughput.py [--data-root ../shared/data] [--scratch /tmp/vitkit-loader-bench]
                                              [--rounds 3] [--datasets cifar10 imagenette-160]

Per dataset, the folder (train and val) is packed once with `vitkit data pack` into the scratch directory
(outside the repo; kept, so a second run skips packing), then the training loader `vitkit train` builds
(`make_loader`, the default 2 decode workers, batch 128, shuffled) feeds the default (DeiT) `TrainAugment` for
`--images` images, from

* folder, streamed: the folder read as `FileSource` (`max_memory_gb 0`): every image decoded again each epoch, the
  same work the shards do;
* shards: the packed shards (`ShardSource`);
* folder, in memory: what `vitkit train` does with a folder whose decoded split fits `max_memory_gb` (both do here):
  decoded once into the cache, memory-mapped, no decoding in the loop (the ceiling: augmentation alone);
* with `--hf`, hf: saved, streamed: the same images saved as a Hugging Face dataset (`--data hf:DIR`, `HFSource`).

A cold pass first drops every file of the arm from the page cache (`posix_fadvise(DONTNEED)` on each image file,
shard or cache entry; no root needed), a warm pass then reads the same epoch's images again. The arms alternate
within each round, so load drift hits them alike; each cell is the median over the rounds. The data-wait share is
`summary.json`'s `data_wait_share` (loader wait / training-step time) of a short `vitkit train` on the folder and on
the shards (CIFAR-10: the 30-min recipe's model and augmentation; Imagenette: the transfer experiments' 64-px ViT).
Not a test: about 6-8 minutes on a 2-core CPU, most of it the first packing and decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description  # noqa: E402
from vitkit.data import AugmentConfig, DataConfig, TrainAugment, load_dataset, make_loader  # noqa: E402
from vitkit.data.cache import cache_root  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IMAGENET_NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@dataclass(frozen=True)
class Setting:
    """How one dataset is read and trained in this benchmark."""

    img_size: int
    images: int  # per timed pass
    steps: int  # of the data-wait run
    train_args: tuple[str, ...]  # of the data-wait run (besides --data, --steps, --out)


SETTINGS = {
    "cifar10": Setting(
        32, 6144, 40, ("--config", str(REPO / "recipes" / "cifar10_30min.yaml"), "--time-budget-min", "0")
    ),
    "imagenette-160": Setting(
        64, 2048, 30,
        ("--model", "Mini/8", "--hidden-dim", "192", "--depth", "6", "--num-heads", "3", "--mlp-dim", "384",
         "--pool", "gap", "--posemb", "learned", "--img-size", "64", "--mean", "0.485", "0.456", "0.406",
         "--std", "0.229", "0.224", "0.225", "--crop", "rrc", "--rrc-scale", "0.25", "1", "--hflip",
         "--randaugment-n", "0", "--mixup", "0", "--cutmix", "0", "--random-erasing", "0"),
    ),
}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--scratch", default="/tmp/vitkit-loader-bench", help="shards and the decode cache go here")
    parser.add_argument("--datasets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="of the loader and of the data-wait runs")
    parser.add_argument("--images", type=int, default=None, help="per timed pass (default: per dataset)")
    parser.add_argument("--train-steps", type=int, default=None, help="of each data-wait run (default: per dataset)")
    parser.add_argument("--no-train", action="store_true", help="skip the data-wait runs")
    parser.add_argument("--hf", action="store_true", help="add the same images as a saved Hugging Face dataset")
    return parser.parse_args()


def vitkit(*argv: str, cache: Path) -> subprocess.CompletedProcess:
    """Run `vitkit ARGV` in a fresh interpreter, failing loudly."""
    env = {**os.environ, "VITKIT_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-m", "vitkit", *argv], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"vitkit {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return done


def pack_once(folder: Path, out: Path, cache: Path) -> float | None:
    """Pack `folder`'s train split into `out` (seconds taken; None when `out` was packed by an earlier run)."""
    if (out / "vitkit-shards.json").exists():
        return None
    shutil.rmtree(out, ignore_errors=True)  # a packing cut short (the scratch directory is this script's own)
    start = time.perf_counter()
    vitkit("data", "pack", str(folder), "--out", str(out), cache=cache)
    return time.perf_counter() - start


def files_under(*roots: Path) -> list[Path]:
    return [Path(d, f) for root in roots for d, _, names in os.walk(root) for f in names]


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (clean pages only: these are read, never written)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed_pass(config: DataConfig, augment: TrainAugment, images: int, epoch: int, batch: int) -> float:
    """Images/s of the training loader + augmentation over `images` images of epoch `epoch`.

    The source is opened afresh (a new memory map of the decode cache) but outside the timing: it is paid once per
    run, the loader's cost every epoch (its worker processes start inside the timing).
    """
    train = load_dataset(config).train
    start, seen = time.perf_counter(), 0
    for step, (x, y) in enumerate(make_loader(train, batch, shuffle=True, seed=0, epoch=epoch, drop_last=True)):
        augment(x, y, step=step)
        seen += len(x)
        if seen >= images:
            break
    return seen / (time.perf_counter() - start)


def save_as_hf_once(folder: Path, out: Path) -> float | None:
    """The folder's train/ and val/ as a Hugging Face DatasetDict (encoded bytes, ClassLabel) saved to `out`."""
    if (out / "dataset_dict.json").exists():
        return None
    import datasets

    start = time.perf_counter()
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
    parts = {}
    for split in ("train", "val"):
        files = [(f, label) for label, c in enumerate(classes) for f in sorted((folder / split / c).iterdir())]
        rows = {"image": [{"bytes": f.read_bytes(), "path": None} for f, _ in files], "label": [y for _, y in files]}
        parts[split] = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict(parts).save_to_disk(str(out))
    return time.perf_counter() - start


def loader_rows(
    name: str, folder: Path, shards: Path, hf: Path | None, cache: Path, rounds: int, images: int, batch: int
) -> list[str]:
    setting = SETTINGS[name]
    norm = IMAGENET_NORM if name.startswith("imagenette") else {}
    common = {"img_size": setting.img_size, "cache_dir": str(cache), "num_workers": 2, **norm}
    arms = {
        "folder, streamed": (DataConfig(path=str(folder), max_memory_gb=0.0, **common), files_under(folder / "train")),
        "shards": (DataConfig(path=str(shards), **common), files_under(shards)),
        "folder, in memory": (DataConfig(path=str(folder), **common), files_under(cache)),
    }
    if hf is not None:
        arms["hf: saved, streamed"] = (DataConfig(path=f"hf:{hf}", max_memory_gb=0.0, **common), files_under(hf))
    for config, _ in arms.values():
        load_dataset(config)  # header index, decode cache: built once, outside the timing
    classes = len(load_dataset(arms["shards"][0]).class_names)
    augment = TrainAugment(AugmentConfig(), setting.img_size, common.get("mean", (0.5,) * 3),
                           common.get("std", (0.5,) * 3), classes, seed=0)  # fmt: skip
    for config, _ in arms.values():  # untimed: first calls of the augmentation kernels, worker start-up paths
        timed_pass(config, augment, 2 * batch, -1, batch)
    rates: dict[tuple[str, str], list[float]] = {}
    for round_ in range(rounds):
        order = list(arms) if round_ % 2 == 0 else list(reversed(arms))
        for arm in order:
            config, files = arms[arm]
            evict(files)
            rates.setdefault((arm, "cold"), []).append(timed_pass(config, augment, images, round_, batch))
            rates.setdefault((arm, "warm"), []).append(timed_pass(config, augment, images, round_, batch))
            print(f"  {name} round {round_ + 1} {arm}: cold {rates[arm, 'cold'][-1]:.0f}, warm "
                  f"{rates[arm, 'warm'][-1]:.0f} images/s", flush=True)  # fmt: skip
    medians = {key: statistics.median(values) for key, values in rates.items()}
    return [f"| {name} | {arm} | {medians[arm, 'cold']:.0f} | {medians[arm, 'warm']:.0f} |" for arm in arms]


def data_wait_rows(
    name: str, folder: Path, shards: Path, cache: Path, scratch: Path, steps: int, batch: int
) -> list[str]:
    setting, rows = SETTINGS[name], []
    for label, path in (("folder", folder), ("shards", shards)):
        out = scratch / "runs" / f"{name}-{label}"
        argv = [
            "train",
            *setting.train_args,
            "--data",
            str(path),
            "--steps",
            str(steps),
            "--batch-size",
            str(batch),
            "--out",
            str(out),
        ]
        vitkit(*argv, "--overwrite", "--no-progress", "--save-every", "0", cache=cache)
        summary = json.loads((out / "summary.json").read_text())
        rows.append(
            f"| {name} | {label} | {summary['data_wait_share']:.2%} | {summary['augment_share']:.2%} | "
            f"{summary['train_images_per_s']:.0f} | {summary['steps']} |"
        )
        print(f"  {rows[-1]}", flush=True)
    return rows


def main() -> None:
    args = parse_args()
    root, scratch = Path(args.data_root).resolve(), Path(args.scratch)
    cache = scratch / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"CPU: {model} ({machine_description()}); VITKIT cache {cache_root(str(cache))}", flush=True)
    loader, waits, packing = [], [], []
    for name in args.datasets:
        folder, shards = root / name, scratch / "shards" / name
        seconds = pack_once(folder, shards, cache)
        if seconds is not None:
            packing.append(f"{name}: packed in {seconds:.0f} s")
            print(f"  {packing[-1]}", flush=True)
        images = args.images or SETTINGS[name].images
        hf = scratch / "hf" / name if args.hf else None
        seconds = save_as_hf_once(folder, hf) if hf else None
        if seconds is not None:
            packing.append(f"{name}: saved as a Hugging Face dataset in {seconds:.0f} s")
        loader += loader_rows(name, folder, shards, hf, cache, args.rounds, images, args.batch_size)
        if not args.no_train:
            steps = args.train_steps or SETTINGS[name].steps
            waits += data_wait_rows(name, folder, shards, cache, scratch, steps, args.batch_size)
    print(
        f"\nLoader throughput, images/s (decode + default augmentation, batch {args.batch_size}, 2 decode workers; "
        f"median of {args.rounds} rounds; CPU: {model}, {os.cpu_count()} cores)\n"
    )
    print("| dataset | source | cold cache | warm cache |\n| --- | --- | ---: | ---: |")
    print("\n".join(loader))
    if waits:
        print("\nData-wait share of a short `vitkit train` (loader wait / training-step time, summary.json)\n")
        print("| dataset | source | data wait | augmentation | images/s | steps |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        print("\n".join(waits))
    if packing:
        print("\n" + "; ".join(packing))


if __name__ == "__main__":
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    main()
