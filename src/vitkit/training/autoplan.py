"""Data-aware defaults: `vitkit train --data DIR` with no recipe and no model plans the run for the data and machine.

The planner is pure: `make_plan(stats, timings, ...)` turns what the dataset is (`DatasetStats`: training images,
classes, the typical image's shorter side, read from a sample of headers) and what this machine measured (seconds
per training image of each candidate model at each candidate resolution) into a recipe, with one reason per
choice. `read_stats` and `time_candidates` gather those inputs (cheap: headers only; a few steps per candidate,
cached per machine as the precision probe is); the CLI is a thin layer over the three.

The choices, in order:
- resolution: the images' own size when small (32 px stays 32), else 64, 96 or 128 px (the Imagenette
  leaderboard's size), the largest whose candidate model still fits `MIN_EPOCHS` epochs in the budget;
- model: a convolutional stem in front of a narrow ViT (CCT's tokenizer at 32 px; at 128 px the paper's hybrid on a
  small ResNet's first stages when the budget leaves it `MIN_EPOCHS` epochs, else Xiao et al. 2021 early
  convolutions): a ViT has no convolutional prior, and small data needs one; the stride-8 candidate only when the
  budget leaves it `LONG_EPOCHS` epochs;
- augmentation and regularisation by the number of epochs: random-resized crops and flips for short schedules,
  RandAugment from `MEDIUM_EPOCHS`, Mixup/CutMix, random erasing and stochastic depth only from `LONG_EPOCHS`
  (fastai's leaderboard uses mixup only past ~80 epochs; DeiT's full recipe is for 300);
- schedule: Muon (AdamW for the non-matrix parameters) at the model's measured rate, a warm-up of a tenth of the
  epochs (1-5), cosine decay, the batch fitted to the data's size; a time budget plans the steps (`budget`).

Every flag given on the command line overrides the plan's value (`vitkit.cli.train`).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitkit.files import write_text_atomic

DEFAULT_BUDGET_MIN = 30.0  # neither --epochs nor --time-budget-min: plan for this many minutes
MAX_EPOCHS = 100  # a budget never plans more epochs than this
MIN_EPOCHS = 8  # a resolution is used when its model fits at least this many epochs in the budget
MEDIUM_EPOCHS = 20  # from here RandAugment
LONG_EPOCHS = 60  # from here Mixup/CutMix, random erasing, stochastic depth, the larger model
HEADER_SAMPLE = 64  # image headers read for the typical size
TIMING_BATCH = 32
SIZE_KNOBS = ("limit_per_class", "val_fraction", "train_fraction")  # data flags that change what is trained on
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetStats:
    """What the planner knows of the data: training and validation images, classes, typical shorter side."""

    train_images: int
    val_images: int
    classes: int
    short_side: int  # median shorter side of a sample of images, in pixels


@dataclass(frozen=True)
class Candidate:
    """A model the planner may choose: a registry name and the ViT fields it changes."""

    name: str
    overrides: tuple[tuple[str, Any], ...]
    label: str  # how the plan names it
    lr: float = 1e-3  # the peak learning rate its measured runs used
    muon_convs: bool = False  # Muon also for its stem's convolution kernels (optim.muon_convs)

    @property
    def fields(self) -> dict[str, Any]:
        """The overrides as a model section."""
        return dict(self.overrides)


def narrow_vit(
    stem: str, patch: int, depth: int, label: str, width: int = 192, lr: float = 1e-3, muon_convs: bool = False
) -> Candidate:
    """A convolutional stem of total stride `patch` before a `depth`-block, `width`-wide ViT (GAP, learned
    position embeddings; the CIFAR recipes' ViT)."""
    fields = (("hidden_dim", width), ("depth", depth), ("num_heads", width // 64), ("mlp_dim", 2 * width),
              ("pool", "gap"), ("posemb", "learned"))  # fmt: skip
    return Candidate(f"{stem}+Mini/{patch}", fields, label, lr, muon_convs)


# The paper's hybrid at CIFAR scale (recipes/cifar10_40ep.yaml): side by side with the CCT tokenizer + 4x192 ViT of
# the 30-minute recipe, 30 minutes each on one Zen 4 thread, it trained 1.6x the images/s (281 against 178) and
# ended 3.9 points ahead (docs/efficiency.md).
# Muon for its trunk's kernels too: 81.8 against 79.5% at 6 epochs, side by side.
SMALL_IMAGES = narrow_vit("C20", 4, 2, "hybrid: a CIFAR ResNet-20's three stages (stride 4) + 2x128 ViT", width=128,
                          lr=2e-3, muon_convs=True)  # fmt: skip
PHOTO_SMALL = narrow_vit("conv4", 16, 6, "early-convolution stem (4 stride-2 convs, stride 16) + 6x192 ViT")
# The paper's hybrid on a small ResNet: +5.4 points over PHOTO_SMALL at 5 epochs on Imagenette (two seeds), +4.9 at
# 20, at about 1.7x its step time (68 against 118 images/s on 2 Zen 4 threads); the trunk's rate (2e-3) lies
# between the ViT's and the ConvNet's (docs/photos.md). Muon for its trunk's kernels too: 79.6% at 5 epochs against
# 77.7 without (two seeds each).
PHOTO_HYBRID = narrow_vit("X18x0.5", 16, 6, "hybrid: a half-width xresnet18's stem and stages 1-3 (stride 16) + "
                          "6x192 ViT", lr=2e-3, muon_convs=True)  # fmt: skip
PHOTO_LARGE = narrow_vit("cct3", 8, 6, "CCT tokenizer (3 conv-pool layers, stride 8) + 6x192 ViT")
PHOTO_LOW_RES = narrow_vit("conv3", 8, 6, "early-convolution stem (3 stride-2 convs, stride 8) + 6x192 ViT")


@dataclass
class Choice:
    """One decision of the plan: the recipe keys it sets and why."""

    what: str
    values: dict[str, Any]
    reason: str


@dataclass
class Plan:
    """A resolved recipe (nested sections) and the choices behind it, in order."""

    choices: list[Choice] = field(default_factory=list)
    size: int = 0  # the chosen resolution
    model: Candidate | None = None  # the chosen model
    epochs: int = 0  # the epochs planned (or expected in the budget)
    fallback: bool = False  # nothing measured fitted: the fastest measured option was taken

    def add(self, what: str, values: dict[str, Any], reason: str) -> None:
        """Record a choice."""
        self.choices.append(Choice(what, values, reason))

    def recipe(self) -> dict[str, dict[str, Any]]:
        """The plan as a nested recipe (`TrainConfig.from_dict`)."""
        out: dict[str, dict[str, Any]] = {}
        for choice in self.choices:
            for key, value in choice.values.items():
                section, name = key.split(".", 1)
                out.setdefault(section, {})[name] = value
        return out

    def describe(self, given: set[str] | None = None) -> str:
        """One line per choice with its reason; a choice a flag replaced says so."""
        lines = []
        for choice in self.choices:
            shown = ", ".join(f"{k.split('.', 1)[1]} {format_value(v)}" for k, v in choice.values.items())
            replaced = sorted(k for k in choice.values if k in (given or set()))
            note = f" [replaced by the flag(s) for {', '.join(replaced)}]" if replaced else ""
            lines.append(f"  {choice.what}: {shown}{note}\n      because {choice.reason}")
        return "\n".join(lines)


def format_value(value: Any) -> str:
    """A recipe value as the plan prints it."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    return str(value)


def candidate_sizes(short_side: int) -> list[int]:
    """Training resolutions worth trying for images of this shorter side, largest first."""
    if short_side <= 48:
        return [max(16, min(48, round(short_side / 16) * 16))]  # CIFAR's 32 stays 32
    if short_side < 112:
        return [64]
    return [128, 96, 64]


def candidates_for(size: int) -> list[Candidate]:
    """Models for a resolution, the larger first."""
    if size <= 48:
        return [SMALL_IMAGES]
    # 128 px: 64 tokens at stride 16 (256 at stride 8 for long schedules); 96 and 64 px: stride 8 (144 and 64 tokens).
    return [PHOTO_LARGE, PHOTO_HYBRID, PHOTO_SMALL] if size >= 128 else [PHOTO_LOW_RES]


def epochs_needed(model: Candidate, budgeted: bool) -> int:
    """Epochs a candidate must fit to be chosen: the larger model is for long schedules; under a budget any other
    must leave `MIN_EPOCHS`; a run fixed in epochs takes any."""
    if model is PHOTO_LARGE:
        return LONG_EPOCHS
    return MIN_EPOCHS if budgeted else 1


def batch_size_for(train_images: int) -> int:
    """128 for thousands of images; a smaller power of two for tiny sets, so an epoch has at least 8 steps."""
    size = 128
    while size > 8 and train_images < 8 * size:
        size //= 2
    return size


def epoch_seconds(stats: DatasetStats, seconds_per_image: float) -> float:
    """An epoch's training (at the measured rate) and validation (a forward pass: a third of a training image)."""
    return seconds_per_image * (stats.train_images + stats.val_images / 3)


def make_plan(
    stats: DatasetStats,
    timings: dict[tuple[str, int], float],
    *,
    epochs: int | None = None,
    budget_min: float | None = None,
    img_size: int | None = None,
) -> Plan:
    """The run for `stats` on a machine that trains candidate (label, size) at `timings` seconds per image.

    Give `epochs` or `budget_min` (neither: `DEFAULT_BUDGET_MIN`); `img_size` fixes the resolution. A pair
    missing from `timings` counts as unmeasured and is only chosen when nothing measured fits.
    """
    plan = Plan()
    defaulted = epochs is None and budget_min is None
    if defaulted:
        budget_min = DEFAULT_BUDGET_MIN
    sizes = [img_size] if img_size else candidate_sizes(stats.short_side)
    options = [(size, model) for size in sizes for model in candidates_for(size)]

    def fits(size: int, model: Candidate) -> float:
        """Epochs of `model` at `size` the budget holds (`epochs` when the run is fixed in epochs)."""
        seconds = timings.get((model.label, size))
        if budget_min is None:
            return float(epochs or 0)
        return budget_min * 60 * 0.95 / epoch_seconds(stats, seconds) if seconds else 0.0

    chosen = None
    for size, model in options:  # the first (largest size, then slowest model) that fits its epochs
        if fits(size, model) >= epochs_needed(model, budget_min is not None):
            chosen = (size, model)
            break
    plan.fallback = chosen is None
    if chosen is None:
        measured = [o for o in options if timings.get((o[1].label, o[0]))] or options
        chosen = min(measured, key=lambda o: timings.get((o[1].label, o[0]), math.inf))
    size, model = chosen
    planned = min(MAX_EPOCHS, max(1, int(fits(size, model)))) if budget_min is not None else int(epochs or 1)
    plan.size, plan.model, plan.epochs = size, model, planned
    rate = timings.get((model.label, size))
    rate_text = f"{1 / rate:.0f} training images/s measured here" if rate else "speed not measured"

    if img_size:
        why_size = "given on the command line"
    elif len(sizes) == 1:
        why_size = f"the images are small (median shorter side {stats.short_side} px): trained near their own size"
    elif size == sizes[0]:
        why_size = f"photos (median shorter side {stats.short_side} px): the leaderboard's 128 px fits the budget"
    else:
        why_size = f"the budget fits under {MIN_EPOCHS} epochs at the larger sizes on this machine; {size} px fits more"
    plan.add("resolution", {"data.img_size": size}, why_size)
    mean, std = ((0.5,) * 3, (0.5,) * 3) if size <= 48 else (IMAGENET_MEAN, IMAGENET_STD)
    plan.add("normalisation", {"data.mean": mean, "data.std": std},
             "ImageNet statistics for photos" if size > 48 else "a neutral 0.5/0.5 for small images")  # fmt: skip
    if model is PHOTO_LARGE:
        why_model = f"the budget holds {planned} epochs even with 4x the tokens of the stride-16 stem ({rate_text})"
    elif model is PHOTO_HYBRID:
        why_model = (
            f"a ViT needs a convolutional prior on small photo sets; a ResNet's first stages give it the most at "
            f"equal epochs (8x8 tokens at 128 px; {rate_text})"
        )
    elif size > 48:
        stride = int(model.name.rsplit("/", 1)[1])
        why_model = (
            f"a ViT needs a convolutional prior on small photo sets; a stride-{stride} stem makes "
            f"{(size // stride) ** 2} tokens at {size} px ({rate_text})"
        )
    else:
        why_model = (
            f"CIFAR-sized images: the paper's hybrid at that scale led a CCT tokenizer + 4x192 ViT by 3.9 points in "
            f"30 minutes side by side (the 40-epoch CIFAR-10 recipe's model; {rate_text})"
        )
    plan.add("model", {"model.name": model.name, **{f"model.{k}": v for k, v in model.overrides}}, why_model)

    if budget_min is not None:
        plan.add(
            "length",
            {"run.time_budget_min": budget_min, "run.epochs": MAX_EPOCHS},
            f"a {budget_min:g}-minute budget: about {planned} epochs at the measured speed (re-planned as it runs)"
            + (" (the default: give --epochs or --time-budget-min)" if defaulted else ""),
        )
    else:
        plan.add("length", {"run.epochs": planned, "run.time_budget_min": 0.0}, "given on the command line")
    batch = batch_size_for(stats.train_images)
    plan.add("batch", {"run.batch_size": batch, "run.eval_batch_size": 256},
             f"{stats.train_images} training images: at least 8 steps an epoch")  # fmt: skip

    plan.add(*augmentation(planned, size))
    warmup = float(min(5, max(1, round(planned / 10))))
    plan.add(
        "schedule",
        {"optim.optimizer": "muon", "optim.muon_convs": model.muon_convs, "optim.lr": model.lr,
         "optim.weight_decay": 0.05, "optim.warmup_epochs": warmup, "optim.min_lr": 1e-5, "optim.schedule": "cosine",
         "optim.clip_grad": 1.0},
        "Muon for the blocks' matrices (+12 points at equal epochs in the CIFAR ablation)"
        + (" and the stem's convolutions past the first (+2.3 at 6 CIFAR-10 epochs, +1.9 at 5 on Imagenette)"
           if model.muon_convs else "")
        + f" at {model.lr:g}, "
        f"{warmup:g} warm-up epoch(s) of ~{planned}, cosine to the minimum",
    )  # fmt: skip
    plan.add("evaluation", {"run.eval_tta": "none", "run.save_every": 0}, "plain single-view validation, as the "
             "leaderboards report it")  # fmt: skip
    return plan


def augmentation(epochs: int, size: int) -> tuple[str, dict[str, Any], str]:
    """Augmentation and regularisation for a schedule of `epochs` at `size`: light for short, strong for long."""
    crop = (
        {"augment.crop": "pad", "augment.pad": max(2, size // 8)}
        if size <= 48
        else {"augment.crop": "rrc", "augment.rrc_scale": (0.35, 1.0) if epochs < MEDIUM_EPOCHS else (0.25, 1.0)}
    )
    values: dict[str, Any] = {**crop, "augment.hflip": True, "augment.label_smoothing": 0.1}
    if epochs < MEDIUM_EPOCHS:
        values.update({"augment.randaugment_n": 0, "augment.mixup": 0.0, "augment.cutmix": 0.0,
                       "augment.random_erasing": 0.0, "model.drop_path": 0.0})  # fmt: skip
        reason = f"~{epochs} epochs: crops and flips only; stronger augmentation slows a short schedule down"
    elif epochs < LONG_EPOCHS:
        values.update({"augment.randaugment_n": 1, "augment.randaugment_m": 9, "augment.mixup": 0.0,
                       "augment.cutmix": 0.0, "augment.random_erasing": 0.0, "model.drop_path": 0.05})  # fmt: skip
        reason = f"~{epochs} epochs: + RandAugment 1/9 and light stochastic depth (the 60-min CIFAR recipe's remedy)"
    else:
        values.update({"augment.randaugment_n": 2, "augment.randaugment_m": 9, "augment.mixup": 0.8,
                       "augment.cutmix": 1.0, "augment.random_erasing": 0.25, "model.drop_path": 0.1})  # fmt: skip
        reason = f"~{epochs} epochs: DeiT's regularisation (RandAugment 2/9, Mixup/CutMix, erasing, drop path 0.1)"
    return "augmentation", values, reason


def read_stats(
    path: str,
    sample: int = HEADER_SAMPLE,
    seed: int = 0,
    *,
    limit_per_class: int | None = None,
    val_fraction: float = 0.1,
    train_fraction: float = 1.0,
) -> DatasetStats:
    """Images, classes and the median shorter side of an ImageFolder (headers of a seeded sample only), counted as
    training will load them: `limit_per_class`, `val_fraction` and `train_fraction` are the data section's.

    Other sources (CIFAR, packed shards, Hugging Face) are loaded as training would load them, at 32 px.
    """
    from vitkit.data import DataConfig, load_dataset
    from vitkit.data.datasets import kept_count
    from vitkit.data.imagefolder import held_out_count, read_header, resolve_split_dirs, scan_classes

    root = Path(path).expanduser()
    if root.is_dir() and not (root / "data_batch_1").exists() and not (root / "index.json").exists():
        split_dirs = resolve_split_dirs(root)
        folders = split_dirs if split_dirs else (root,)
        scanned = [scan_classes(folder, limit_per_class)[0] for folder in folders]
        files = [f[0] for group in scanned for items in group.values() for f in items]
        per_class = [len(items) for items in scanned[0].values()]
        if split_dirs:
            train_per_class, val = per_class, sum(len(items) for items in scanned[1].values())
        else:
            held = [held_out_count(n, val_fraction) for n in per_class]
            train_per_class, val = [n - h for n, h in zip(per_class, held, strict=True)], sum(held)
        train = sum(kept_count(n, train_fraction) for n in train_per_class if n)
        picked = random.Random(seed).sample(files, min(sample, len(files)))
        sides = [min(h) for h in (read_header(p) for p in picked) if not isinstance(h, str)]
        return DatasetStats(train, val, len(scanned[0]), int(statistics.median(sides)) if sides else 32)
    config = DataConfig(path=path, img_size=32, limit_per_class=limit_per_class, val_fraction=val_fraction,
                        train_fraction=train_fraction)  # fmt: skip
    splits = load_dataset(config)
    return DatasetStats(len(splits.train), len(splits.val), splits.num_classes, splits.image_size)


def timing_cache_path() -> Path:
    """Candidate timings live beside the precision probe's results (one JSON file per user)."""
    from vitkit.training.runtime import probe_cache_path

    return probe_cache_path().with_name("autoplan_timings.json")


def time_candidates(
    pairs: list[tuple[Candidate, int]],
    classes: int,
    precision: str,
    device: str = "cpu",
    steps: int = 2,
    batch: int = TIMING_BATCH,
) -> dict[tuple[str, int], float]:
    """Seconds per training image (forward, backward, the plan's optimizer step) of each (candidate, size) on this
    machine.

    One warm-up step and `steps` timed ones at `batch` images under `precision`; cached per machine key, so a
    second plan on the same machine times nothing.
    """
    import torch

    from vitkit.checkpoints import create_model
    from vitkit.inference.device import autocast
    from vitkit.training.config import OptimConfig
    from vitkit.training.optim import build_optimizer
    from vitkit.training.runtime import machine_key

    cache = timing_cache_path()
    stored: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(cache.read_text())
    out = {}
    for model_spec, size in pairs:
        where = torch.device(device)
        key = (
            f"v2:{machine_key()}:{where}:{model_spec.name}:{sorted(model_spec.overrides)}:{model_spec.muon_convs}:"
            f"{size}:{precision}:{batch}"
        )
        if key not in stored:
            model = create_model(model_spec.name, num_classes=classes, img_size=size, **model_spec.fields).to(where)
            # The optimizer the plan trains with: Muon's Newton-Schulz steps are part of the step's time.
            optim = OptimConfig(optimizer="muon", muon_convs=model_spec.muon_convs, lr=1e-4)
            optimizer = build_optimizer(model, None, optim, precision)
            images = torch.randn(batch, 3, size, size, device=where)
            labels = torch.randint(0, classes, (batch,), device=where)
            times = []
            for _ in range(steps + 1):
                start = time.perf_counter()
                with autocast(precision, where):
                    loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if where.type == "cuda":
                    torch.cuda.synchronize(where)
                times.append(time.perf_counter() - start)
            stored[key] = min(times[1:]) / batch
        out[(model_spec.label, size)] = stored[key]
    with contextlib.suppress(OSError, ValueError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, json.dumps(stored, indent=1))
    return out


def plan_run(
    stats: DatasetStats,
    time_pairs: Callable[[list[tuple[Candidate, int]]], dict[tuple[str, int], float]],
    *,
    epochs: int | None = None,
    budget_min: float | None = None,
    img_size: int | None = None,
) -> tuple[Plan, dict[tuple[str, int], float]]:
    """`make_plan`, timing only what the choice needs. A run fixed in epochs times only the model it chose (for the
    plan's speed line). Under a budget: resolutions largest first, at each the fastest model first; a slower one
    is timed only when the last one timed fits the epochs the slower one needs (being slower, it cannot fit more);
    stops at the first resolution that fits."""
    timings: dict[tuple[str, int], float] = {}
    budgeted = budget_min is not None or epochs is None  # make_plan's default is a budget

    def measure(model: Candidate, size: int) -> None:
        if (model.label, size) not in timings:
            timings.update(time_pairs([(model, size)]))

    if not budgeted:
        chosen = make_plan(stats, timings, epochs=epochs, img_size=img_size)
        measure(chosen.model, chosen.size)
        return make_plan(stats, timings, epochs=epochs, img_size=img_size), timings
    plan = Plan()
    for size in [img_size] if img_size else candidate_sizes(stats.short_side):
        previous = None
        for model in reversed(candidates_for(size)):
            previous_fits = not plan.fallback and plan.model is previous
            if previous and not (previous_fits and plan.epochs >= epochs_needed(model, budgeted=True)):
                break  # the last one timed did not fit, or fits fewer epochs than this slower one needs
            measure(model, size)
            previous = model
            plan = make_plan(stats, timings, epochs=epochs, budget_min=budget_min, img_size=size)
        if not plan.fallback:
            break
    # Planned again over every size weighed, so the reasons speak of them (unmeasured pairs count as not fitting).
    return make_plan(stats, timings, epochs=epochs, budget_min=budget_min, img_size=img_size), timings


def pairs_to_time(stats: DatasetStats, img_size: int | None = None) -> list[tuple[Candidate, int]]:
    """Every (candidate, size) the planner may weigh for this data."""
    sizes = [img_size] if img_size else candidate_sizes(stats.short_side)
    return [(model, size) for size in sizes for model in candidates_for(size)]
