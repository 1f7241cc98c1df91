"""Few-shot linear evaluation (paper Sec. 4.1): closed-form regularised least squares on frozen pre-logit features.

For k shots per class, k training images of each class are drawn (per seed) from the train split; a linear
map with bias is fitted in closed form from their features to {-1, 1} one-hot targets, and scored by
top-1 accuracy on the whole val split. Mean and standard deviation over seeds are reported.

The L2 penalty is chosen from a grid (2^-10 .. 2^19, as big_vision's few-shot evaluator sweeps) by the
leave-one-out squared error over the training shots: each shot is held out in turn and predicted by the fit
on the others, computed exactly in closed form (PRESS, from the diagonal of the hat matrix). This needs no
extra images, so it also works for 1-shot, where the held-out image's class is then unseen by its fit: the
criterion still measures how well the other classes' scores generalise. Ties go to the larger penalty.

Features are computed once per checkpoint and split and cached under the vitkit cache directory, keyed by a
hash of the weights, the data path, the split settings and the preprocessing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitkit.data import DataConfig, EvalTransform, ImageSource, load_dataset, make_loader
from vitkit.data.cache import cache_root, load_entry, save_entry
from vitkit.errors import UsageError
from vitkit.inference import Preprocessing, autocast, load_for_inference
from vitkit.models import Model, VisionTransformer

log = logging.getLogger("vitkit.analysis")

L2_GRID = tuple(2.0**k for k in range(-10, 20))
FEATURES_VERSION = 1  # bump when feature extraction changes, so stale cache entries are never read


@dataclass
class FewShotResult:
    """Accuracies (%) of one shot count over seeds, with the L2 penalty each seed chose."""

    shots: int
    accuracies: list[float]
    l2: list[float]

    @property
    def mean(self) -> float:
        """Mean accuracy over seeds."""
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for one seed)."""
        if len(self.accuracies) < 2:
            return 0.0
        return math.sqrt(sum((a - self.mean) ** 2 for a in self.accuracies) / (len(self.accuracies) - 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"shots": self.shots, "mean": self.mean, "std": self.std, "accuracies": self.accuracies, "l2": self.l2}


@dataclass
class FewShotReport:
    """Few-shot results of one checkpoint on one dataset."""

    checkpoint: str
    data: str
    feature_dim: int
    num_classes: int
    train_images: int
    val_images: int
    results: list[FewShotResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "checkpoint": self.checkpoint,
            "data": self.data,
            "feature_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "train_images": self.train_images,
            "val_images": self.val_images,
            "results": [r.to_dict() for r in self.results],
        }

    def table(self) -> str:
        """A small text table: shots, mean +- std, the seeds' accuracies."""
        lines = [f"{self.checkpoint} on {self.data}: {self.num_classes} classes, {self.val_images} val images"]
        lines.append(f"{'shots':>5}  {'top-1 %':>14}  seeds")
        for r in self.results:
            seeds = " ".join(f"{a:.2f}" for a in r.accuracies)
            lines.append(f"{r.shots:>5}  {r.mean:>7.2f} +- {r.std:<4.2f}  {seeds}")
        return "\n".join(lines)


def ridge_fit(x: torch.Tensor, y: torch.Tensor, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights W (D, K) and bias b (K,) minimising ||x W + b - y||^2 + l2 ||W||^2 (the bias is not penalised)."""
    x, y = x.double(), y.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    u, s, vh = torch.linalg.svd(x - x_mean, full_matrices=False)
    weights = vh.T @ ((s / (s**2 + l2))[:, None] * (u.T @ (y - y_mean)))
    return weights, y_mean - x_mean @ weights


def loo_errors(x: torch.Tensor, y: torch.Tensor, grid: tuple[float, ...] = L2_GRID) -> torch.Tensor:
    """Leave-one-out mean squared error of `ridge_fit` for each penalty of `grid` (exact, from the hat matrix).

    With X_c = U S V^T (centred features), the fit's hat matrix is H = 11^T / n + U diag(s^2 / (s^2 + l2)) U^T
    and the residual of sample i fitted without it is r_i / (1 - H_ii).
    """
    x, y = x.double(), y.double()
    n = x.shape[0]
    u, s, _ = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    projected = u.T @ (y - y.mean(0))
    errors = []
    for l2 in grid:
        shrink = s**2 / (s**2 + l2)
        fitted = y.mean(0) + u @ (shrink[:, None] * projected)
        leverage = 1.0 / n + (u**2) @ shrink
        residual = (y - fitted) / (1 - leverage).clamp(min=1e-12)[:, None]
        errors.append(residual.pow(2).mean())
    return torch.stack(errors)


def choose_l2(x: torch.Tensor, y: torch.Tensor, grid: tuple[float, ...] = L2_GRID) -> float:
    """The penalty of `grid` with the lowest leave-one-out error (the largest among near-ties)."""
    errors = loo_errors(x, y, grid)
    best = errors.min()
    return max(l2 for l2, e in zip(grid, errors.tolist(), strict=True) if e <= best.item() * (1 + 1e-9))


def pm_one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """{-1, 1} one-hot targets (N, K)."""
    return torch.nn.functional.one_hot(labels, num_classes).double() * 2 - 1


def sample_shots(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Indices of `shots` random images of every class (seeded), in class order."""
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(picks)


def fewshot_accuracy(
    train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], shots: int, seed: int
) -> tuple[float, float]:
    """Top-1 accuracy (%) on `val` (features, labels) of the least-squares classifier fitted to `shots` per class
    of `train`, and the L2 penalty it chose."""
    features, labels = train
    num_classes = int(max(labels.max(), val[1].max())) + 1
    chosen = sample_shots(labels, shots, seed)
    x, y = features[chosen], pm_one_hot(labels[chosen], num_classes)
    l2 = choose_l2(x, y)
    weights, bias = ridge_fit(x, y, l2)
    predicted = (val[0].double() @ weights + bias).argmax(1)
    return (predicted == val[1]).double().mean().item() * 100, l2


def check_shots(labels: torch.Tensor, class_names: list[str], shots: list[int], data: str) -> None:
    """Refuse one-class data and shot counts larger than the smallest class of the train split."""
    if len(class_names) < 2:
        raise UsageError(f"{data} has {len(class_names)} class: few-shot classification needs at least 2 class folders")
    counts = torch.bincount(labels, minlength=len(class_names))
    smallest = int(counts.argmin())
    if min(shots) < 1:
        raise UsageError(f"--shots must be positive, got {min(shots)}")
    if max(shots) > counts[smallest]:
        raise UsageError(
            f"{max(shots)} shots exceed the smallest class of the train split of {data} (class "
            f"'{class_names[smallest]}' has {int(counts[smallest])} images); use --shots up to {int(counts[smallest])}"
        )


@torch.no_grad()
def extract_features(
    model: Model, source: ImageSource, transform: EvalTransform, *, batch_size: int, device: torch.device,
    precision: str,
) -> torch.Tensor:  # fmt: skip
    """Pre-logit features (N, D), float32 on the CPU, of every image of `source` in order."""
    check_features(model)
    model.eval()
    out = []
    for images, _ in make_loader(source, batch_size, shuffle=False, seed=0, epoch=0, device=device):
        with autocast(precision, device):
            out.append(model.forward_head(model.forward_features(transform(images)), pre_logits=True).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def check_features(model: Model, origin: str = "") -> None:
    """Refuse a model that is not a ViT: the paper's few-shot protocol reads a ViT's pre-logit features.

    Every family gives `forward_head(..., pre_logits=True)` (a ConvNet: its pooled map), so this is a choice,
    not a missing capability: ConvNet few-shot is untested here and stays refused.
    """
    if not isinstance(model, VisionTransformer):
        raise UsageError(
            f"{origin or type(model).__name__} has no pre-logit features of a ViT (it is a {type(model).__name__}); "
            "few-shot evaluation needs a ViT checkpoint"
        )


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of the model's weights (names, shapes, bytes): the cache key's checkpoint part."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def features_key(weights: str, config: DataConfig, split: str, prep: Preprocessing, source: ImageSource) -> str:
    """Cache key of one split's features: weights, data location and split settings, preprocessing, labels."""
    where = config.path if config.path == "digits" else str(Path(config.path).expanduser().resolve())
    described = {
        "version": FEATURES_VERSION, "weights": weights, "data": where, "split": split,
        "val_fraction": config.val_fraction, "seed": config.seed, "limit": config.limit_per_class,
        "img_size": prep.img_size, "mean": list(prep.mean), "std": list(prep.std), "images": len(source),
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    digest.update(source.labels.numpy().tobytes())
    return digest.hexdigest()[:32]


def cached_features(
    model: torch.nn.Module, source: ImageSource, key: str, cache_dir: str | None, **extract: Any
) -> torch.Tensor:
    """`extract_features`, read from / written to the cache entry `fewshot-KEY.pt`."""
    location = cache_root(cache_dir) / f"fewshot-{key}.pt"
    entry = load_entry(location)
    if entry is not None:
        log.info("few-shot features from the cache (%s)", location)
        return entry["features"]
    features = extract_features(model, source, **extract)
    save_entry(location, {"features": features})
    return features


def fewshot_evaluate(
    checkpoint: str | Path,
    data: str,
    shots: list[int] | tuple[int, ...] = (1, 5, 10, 25),
    seeds: int = 3,
    *,
    batch_size: int = 256,
    device: str = "auto",
    cache_dir: str | None = None,
) -> FewShotReport:
    """Few-shot linear accuracy of `checkpoint`'s frozen features on `data` (shots from train, accuracy on val)."""
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    model, prep, path, target = load_for_inference(checkpoint, device)
    check_features(model, str(path))
    config = DataConfig(path=str(data), img_size=prep.img_size, mean=prep.mean, std=prep.std, cache_dir=cache_dir)
    splits = load_dataset(config)
    check_shots(splits.train.labels, splits.class_names, list(shots), str(data))
    transform = EvalTransform(prep.img_size, prep.mean, prep.std).to(target)
    extract = {"transform": transform, "batch_size": batch_size, "device": target, "precision": prep.precision}
    weights = weights_digest(model)
    features = {
        split: cached_features(model, source, features_key(weights, config, split, prep, source), cache_dir, **extract)
        for split, source in (("train", splits.train), ("val", splits.val))
    }
    train, val = (features["train"], splits.train.labels), (features["val"], splits.val.labels)
    report = FewShotReport(
        str(path), str(data), features["train"].shape[1], len(splits.class_names), len(splits.train), len(splits.val)
    )
    for k in shots:
        runs = [fewshot_accuracy(train, val, k, seed) for seed in range(seeds)]
        report.results.append(FewShotResult(k, [a for a, _ in runs], [l2 for _, l2 in runs]))
    return report
