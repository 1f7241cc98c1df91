"""Training throughput: vitkit's train step against a conventional PyTorch loop, same model, precision and batch.

vitkit: decoded uint8 images held in memory, batched augmentation on the training device (pad-crop, flip,
RandAugment as whole-batch tensor ops), autocast, AdamW step (`vitkit.training.Trainer.train_step`).
conventional: a torch DataLoader whose workers open each JPEG and augment it one image at a time with PIL
(pad-crop, flip, RandAugment written with PIL ops, as torchvision does), then the same model and AdamW step.

Prints a markdown table, the ratio, the step's share of this machine's measured matmul peak, and where the
time goes. Not a test: run it by hand (about 3-5 minutes on a 2-core CPU).

    .venv/bin/python benchmarks/speed/train_throughput.py [--data ../shared/data/cifar10] [--steps 20]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps
from torch.utils.data import DataLoader, Dataset

from vitkit.data import AugmentConfig
from vitkit.training import create_trainer, load_config
from vitkit.training.objectives import Batch
from vitkit.training.runtime import attention_kernel, autocast, resolve_precision

REPO = Path(__file__).resolve().parents[2]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO / ".." / "shared" / "data" / "cifar10"), help="ImageFolder root")
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "cifar10.yaml"), help="model comes from here")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per pipeline (after 3 warm-up steps)")
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="auto: what `vitkit train` picks here (bf16 with AMX, else fp32)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional loop")
    parser.add_argument("--randaugment-n", type=int, default=2)
    parser.add_argument("--randaugment-m", type=int, default=9)
    return parser.parse_args()


# --- the conventional loop: per-image PIL decode and augmentation in DataLoader workers ----------------------


def _rand_sign() -> float:
    return 1.0 if random.random() < 0.5 else -1.0


def pil_randaugment(image: Image.Image, n: int, m: int, fill: tuple[int, int, int]) -> Image.Image:
    """RandAugment (Cubuk et al. 2020) with PIL ops and torchvision's magnitude ranges, one image at a time."""
    level = m / 30
    size = image.size[0]
    for _ in range(n):
        op = random.randrange(14)
        if op == 1:
            image = image.transform(
                image.size, Image.AFFINE, (1, 0.3 * level * _rand_sign(), 0, 0, 1, 0), fillcolor=fill
            )
        elif op == 2:
            image = image.transform(
                image.size, Image.AFFINE, (1, 0, 0, 0.3 * level * _rand_sign(), 1, 0), fillcolor=fill
            )
        elif op == 3:
            shift = 150 / 331 * size * level * _rand_sign()
            image = image.transform(image.size, Image.AFFINE, (1, 0, shift, 0, 1, 0), fillcolor=fill)
        elif op == 4:
            shift = 150 / 331 * size * level * _rand_sign()
            image = image.transform(image.size, Image.AFFINE, (1, 0, 0, 0, 1, shift), fillcolor=fill)
        elif op == 5:
            image = image.rotate(30 * level * _rand_sign(), fillcolor=fill)
        elif op in (6, 7, 8, 9):
            enhancer = (ImageEnhance.Brightness, ImageEnhance.Color, ImageEnhance.Contrast, ImageEnhance.Sharpness)
            image = enhancer[op - 6](image).enhance(1 + 0.9 * level * _rand_sign())
        elif op == 10:
            image = ImageOps.posterize(image, 8 - round(4 * level))
        elif op == 11:
            image = ImageOps.solarize(image, round(256 * (1 - level)))
        elif op == 12:
            image = ImageOps.autocontrast(image)
        elif op == 13:
            image = ImageOps.equalize(image)
    return image


class JpegFolder(Dataset):
    """ImageFolder read the usual way: decode one JPEG per item and augment it with PIL."""

    def __init__(self, root: Path, mean: tuple, std: tuple, n: int, m: int) -> None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.items = [(str(f), c) for c, name in enumerate(classes) for f in sorted((root / name).iterdir())]
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.fill = tuple(round(255 * v) for v in mean)
        self.n, self.m = n, m

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        image = Image.open(path).convert("RGB")
        padded = ImageOps.expand(image, border=4, fill=0)  # pad-and-crop (He et al. 2016)
        left, top = random.randint(0, 8), random.randint(0, 8)
        image = padded.crop((left, top, left + image.size[0], top + image.size[1]))
        if random.random() < 0.5:
            image = ImageOps.mirror(image)
        image = pil_randaugment(image, self.n, self.m, self.fill)
        tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (tensor - self.mean) / self.std, label


def _seed_worker(worker_id: int) -> None:
    random.seed(torch.initial_seed() % 2**32)
    torch.set_num_threads(1)


def conventional_loader(args, config) -> DataLoader:
    """The usual torch DataLoader over JPEG files, decoding and augmenting in `args.workers` processes."""
    dataset = JpegFolder(
        Path(args.data) / "train", config.data.mean, config.data.std, args.randaugment_n, args.randaugment_m
    )
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=args.workers > 0,
        prefetch_factor=4 if args.workers > 0 else None,
        worker_init_fn=_seed_worker,
    )


def run_conventional(model, args, config, steps: int) -> dict:
    """img/s and data-wait share of the DataLoader + PIL pipeline with a plain AdamW step."""
    loader = conventional_loader(args, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    batches = iter(loader)
    wait = total = 0.0
    for i in range(steps + 3):
        start = time.perf_counter()
        images, labels = next(batches)
        loaded = time.perf_counter()
        with autocast(args.precision, torch.device("cpu")), attention_kernel(config.runtime.attention):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        if i >= 3:
            wait, total = wait + loaded - start, total + end - start
    return {"images_per_s": steps * args.batch_size / total, "step_ms": 1000 * total / steps, "wait": wait / total}


# --- vitkit's train step ------------------------------------------------------------------------------------


def vitkit_config(args):
    """The recipe's model and data, with this benchmark's batch, precision, threads and augmentation."""
    config = load_config(
        args.recipe,
        {
            "data.path": args.data,
            "run.batch_size": args.batch_size,
            "runtime.precision": args.precision,
            "runtime.threads": args.threads,
            "runtime.device": "cpu",
            "run.epochs": 1,
        },
    )
    augment = AugmentConfig(
        crop="pad",
        pad=4,
        hflip=True,
        randaugment_n=args.randaugment_n,
        randaugment_m=args.randaugment_m,
        mixup=0.0,
        cutmix=0.0,
        random_erasing=0.0,
        label_smoothing=0.1,
    )
    return config.replace({"augment": {k: getattr(augment, k) for k in augment.__dataclass_fields__}})


def run_vitkit(trainer, args, steps: int) -> dict:
    """img/s and the time split of vitkit's loop: loader wait, batched augmentation, train_step."""
    from vitkit.data import make_loader

    loader = make_loader(trainer.inputs.data.train, args.batch_size, shuffle=True, seed=0, epoch=0, drop_last=True)
    batches = iter(loader)
    wait = augment = total = 0.0
    for i in range(steps + 3):
        start = time.perf_counter()
        images, labels = next(batches)
        loaded = time.perf_counter()
        inputs, targets = trainer.inputs.augment[trainer.config.data.img_size](images, labels)
        augmented = time.perf_counter()
        trainer.train_step(Batch(inputs, targets))
        end = time.perf_counter()
        if i >= 3:
            wait, augment, total = wait + loaded - start, augment + augmented - loaded, total + end - start
    return {
        "images_per_s": steps * args.batch_size / total,
        "step_ms": 1000 * total / steps,
        "wait": wait / total,
        "augment": augment / total,
    }


def data_only(args, config, trainer, batches: int) -> dict:
    """images/s each data pipeline delivers with no model (what bounds a fast step, e.g. on a GPU)."""
    from vitkit.data import make_loader

    out = {}
    loader = iter(
        make_loader(trainer.inputs.data.train, args.batch_size, shuffle=True, seed=1, epoch=0, drop_last=True)
    )
    for i in range(batches + 2):
        if i == 2:
            start = time.perf_counter()
        trainer.inputs.augment[trainer.config.data.img_size](*next(loader))
    out["vitkit"] = batches * args.batch_size / (time.perf_counter() - start)
    loader = iter(conventional_loader(args, config))
    for i in range(batches + 2):
        if i == 2:
            start = time.perf_counter()
        next(loader)
    out["conventional"] = batches * args.batch_size / (time.perf_counter() - start)
    return out


def step_breakdown(trainer, args, repeats: int = 5) -> dict:
    """Median ms of forward, backward and optimizer for one batch (the model part of either loop)."""
    model, optimizer = trainer.learner.model, trainer.learner.optimizer
    x = torch.randn(args.batch_size, 3, trainer.config.data.img_size, trainer.config.data.img_size)
    y = torch.randint(0, 10, (args.batch_size,))
    times = {"forward": [], "backward": [], "optimizer": []}
    for _ in range(repeats):
        start = time.perf_counter()
        with autocast(args.precision, torch.device("cpu")), attention_kernel(trainer.runtime.attention):
            loss = F.cross_entropy(model(x).float(), y)
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        times["forward"].append(forward - start)
        times["backward"].append(backward - forward)
        times["optimizer"].append(end - backward)
    return {k: 1000 * sorted(v)[len(v) // 2] for k, v in times.items()}


def step_flops(model, args, img_size: int) -> int:
    """FLOPs of one forward + backward of a batch (a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(args.batch_size, 3, img_size, img_size)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(args.batch_size, dtype=torch.long)).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n x n matmul in `dtype` on this machine at the current thread count."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def top_ops(trainer, args, rows: int = 8) -> str:
    """torch.profiler's most expensive ops over two train steps."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (args.batch_size,))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            trainer.train_step(Batch(*trainer.inputs.augment[trainer.config.data.img_size](x, y)))
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)
    return "\n".join(line[:120] for line in table.splitlines())


def main() -> None:
    args = parse_args()
    args.precision = resolve_precision(args.precision, torch.device("cpu"))[0]
    torch.manual_seed(0)
    random.seed(0)
    config = vitkit_config(args)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = create_trainer(config, Path(scratch), resume=False)
    torch.set_num_threads(args.threads)
    model = trainer.learner.model
    params = sum(p.numel() for p in model.parameters())
    precision = "bf16 autocast" if args.precision == "bf16" else "fp32"
    print(
        f"model {config.model.name} D={model.config.hidden_dim} L={model.config.depth} ({params / 1e6:.2f}M params), "
        f"{config.data.img_size}px, batch {args.batch_size}, {precision}, {args.threads} thread(s), "
        f"RandAugment n={args.randaugment_n} m={args.randaugment_m}; conventional loop: {args.workers} workers; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )

    vitkit_result = run_vitkit(trainer, args, args.steps)
    conventional = run_conventional(model, args, config, args.steps)
    pipelines = data_only(args, config, trainer, batches=30)
    breakdown = step_breakdown(trainer, args)
    flops = step_flops(model, args, config.data.img_size)
    peak = matmul_peak(torch.bfloat16 if args.precision == "bf16" else torch.float32)
    ratio = vitkit_result["images_per_s"] / conventional["images_per_s"]

    print("\n| pipeline | train images/s | ms / step | waiting for data | data pipeline alone, images/s |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| vitkit (in-memory uint8, batched augmentation, {args.precision}) | {vitkit_result['images_per_s']:.0f} | "
        f"{vitkit_result['step_ms']:.0f} | {100 * vitkit_result['wait']:.1f}% (+{100 * vitkit_result['augment']:.1f}%"
        f" augmenting) | {pipelines['vitkit']:.0f} |"
    )
    print(
        f"| conventional (DataLoader x{args.workers}, PIL per image, {args.precision}) | "
        f"{conventional['images_per_s']:.0f} | {conventional['step_ms']:.0f} | {100 * conventional['wait']:.1f}% "
        f"| {pipelines['conventional']:.0f} |"
    )
    print(
        f"\nvitkit / conventional: {ratio:.2f}x training; {pipelines['vitkit'] / pipelines['conventional']:.2f}x data "
        "pipeline alone"
    )
    achieved = flops / (vitkit_result["step_ms"] / 1000) / 1e9
    print(f"\nstep FLOPs (forward + backward): {flops / 1e9:.1f} GFLOP; vitkit achieves {achieved:.1f} GFLOP/s")
    print(
        f"measured 2048^3 {args.precision} matmul peak at {args.threads} thread(s): {peak:.0f} GFLOP/s -> the step "
        f"runs at {100 * achieved / peak:.0f}% of it"
    )
    model_ms = sum(breakdown.values())
    step_ms = vitkit_result["step_ms"]
    print("\nwhere vitkit's step time goes (ms per batch):")
    print(
        f"  data wait {step_ms * vitkit_result['wait']:.0f} | augment {step_ms * vitkit_result['augment']:.0f} | "
        f"forward {breakdown['forward']:.0f} | backward {breakdown['backward']:.0f} | "
        f"optimizer {breakdown['optimizer']:.0f} (model total {model_ms:.0f})"
    )
    print("\ntop ops (torch.profiler, 2 vitkit train steps):")
    print(top_ops(trainer, args))


if __name__ == "__main__":
    main()
