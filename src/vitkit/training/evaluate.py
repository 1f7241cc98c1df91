"""Accuracy of a model on a labelled source: top-1, top-5, loss, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vitkit.data import EvalTransform, ImageSource, make_loader
from vitkit.training.runtime import autocast


@dataclass
class EvalResult:
    """What `evaluate` measured; accuracies are percentages."""

    top1: float
    top5: float
    loss: float
    images: int
    confusion: torch.Tensor  # (K, K) int64, rows: true class, columns: predicted class
    class_names: list[str] = field(default_factory=list)

    @property
    def per_class(self) -> dict[str, float]:
        """Accuracy (%) of each class: the diagonal over the row sums (NaN for a class with no images)."""
        totals = self.confusion.sum(1).clamp(min=1)
        accuracy = (self.confusion.diag().double() / totals * 100).tolist()
        present = (self.confusion.sum(1) > 0).tolist()
        return {
            name: (acc if ok else float("nan"))
            for name, acc, ok in zip(self.class_names, accuracy, present, strict=True)
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: top-1, top-5, loss, per-class accuracy and the confusion matrix as nested lists."""
        return {
            "top1": round(self.top1, 4),
            "top5": round(self.top5, 4),
            "loss": round(self.loss, 6),
            "images": self.images,
            "per_class": {k: (None if v != v else round(v, 4)) for k, v in self.per_class.items()},
            "confusion_matrix": self.confusion.tolist(),
            "class_names": self.class_names,
        }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    source: ImageSource,
    transform: EvalTransform,
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    flip: bool = False,
) -> EvalResult:
    """Run `model` over every image of `source` once, in order, under the given precision.

    `flip` averages the logits of each image and its mirror image (test-time augmentation).
    """
    was_training = model.training
    model.eval()
    num_classes = len(source.class_names)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    top5_hits = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    k = min(5, num_classes)
    for images, labels in make_loader(source, batch_size, shuffle=False, seed=0, epoch=0, device=device):
        inputs = transform(images)
        with autocast(precision, device):
            logits = model(inputs).float()
            if flip:
                logits = (logits + model(inputs.flip(-1)).float()) / 2
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        top5_hits += (logits.topk(k, dim=1).indices == labels[:, None]).any(1).sum()
        confusion.view(-1).index_add_(0, labels * num_classes + logits.argmax(1), torch.ones_like(labels))
    model.train(was_training)
    total = max(1, len(source))
    return EvalResult(
        top1=confusion.diag().sum().item() / total * 100,
        top5=top5_hits.item() / total * 100,
        loss=loss_sum.item() / total,
        images=len(source),
        confusion=confusion.cpu(),
        class_names=list(source.class_names),
    )


def plot_confusion(result: EvalResult, path: str | Path, title: str = "") -> Path:
    """The confusion matrix as a PNG: rows normalised to the share of each true class, counts written in cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = result.confusion.double()
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    k = counts.shape[0]
    size = min(20.0, 2.5 + 0.45 * k)
    figure, axis = plt.subplots(figsize=(size, size * 0.9))
    image = axis.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        ticks = range(k)
        axis.set_xticks(ticks, result.class_names, rotation=90 if k > 10 else 45, ha="right")
        axis.set_yticks(ticks, result.class_names)
        for row in range(k):
            for col in range(k):
                if counts[row, col] > 0:
                    color = "white" if shares[row, col] > 0.5 else "black"
                    axis.text(col, row, int(counts[row, col]), ha="center", va="center", fontsize=7, color=color)
    axis.set(xlabel="predicted", ylabel="true", title=title or f"top-1 {result.top1:.2f}% on {result.images} images")
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
