"""Classify image files with a checkpoint: logits, or the top-k labels with their probabilities."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitkit.data import SkippedFile, load_images
from vitkit.inference.device import autocast
from vitkit.inference.loading import LoadedModel, load_for_inference, require_head, with_precision

PREDICT_CHUNK = 64  # images decoded and classified at a time


@dataclass
class Prediction:
    """The top-k labels of one image with their probabilities."""

    path: str
    labels: list[str]
    probabilities: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        top = [
            {"label": label, "probability": round(p, 6)}
            for label, p in zip(self.labels, self.probabilities, strict=True)
        ]
        return {"path": self.path, "top_k": top}


@torch.no_grad()
def predict_logits(loaded: LoadedModel, images: Sequence[str]) -> tuple[torch.Tensor, list[str], list[SkippedFile]]:
    """Logits (N, K, float32, CPU) of the readable `images`, their paths in order, and the files that were not."""
    model, prep, path, device = loaded
    require_head(model, path)
    rows, good, skipped = [], [], []
    for start in range(0, len(images), PREDICT_CHUNK):
        readable = []
        for image in images[start : start + PREDICT_CHUNK]:
            reason = missing_reason(image)
            if reason:
                skipped.append(SkippedFile(image, reason))
            else:
                readable.append(image)
        with warnings.catch_warnings(), quiet_logger("vitkit.data"):
            warnings.simplefilter("ignore")  # the caller reports every skipped file itself
            batch, kept, bad = load_images(readable, prep.img_size, prep.mean, prep.std)
        skipped.extend(bad)
        if kept:
            rows.append(classify(loaded, batch))
            good.extend(kept)
    order = {image: i for i, image in enumerate(images)}
    skipped.sort(key=lambda s: order.get(s.path, len(order)))
    logits = torch.cat(rows) if rows else torch.empty(0, model.config.num_classes)
    return logits, good, skipped


@torch.no_grad()
def classify(loaded: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
    """Logits (B, K, float32, CPU) of a normalised batch, in the checkpoint's precision (what predict runs)."""
    model, prep, _, device = loaded
    with autocast(prep.precision, device):
        return model(batch.to(device)).float().cpu()


def predict_files(
    source: str | Path, images: list[str], *, top_k: int = 5, device: str = "auto", precision: str | None = None
) -> tuple[list[Prediction], list[SkippedFile], Path]:
    """Classify image files with a checkpoint (in `precision`; None: the one it trained in); files that cannot be
    read are returned with the reason."""
    return top_predictions(with_precision(load_for_inference(source, device), precision), images, top_k)


def top_predictions(
    loaded: LoadedModel, images: list[str], top_k: int = 5
) -> tuple[list[Prediction], list[SkippedFile], Path]:
    """The `top_k` classes of each readable image under a loaded model (a checkpoint's or an exported file's)."""
    logits, good, skipped = predict_logits(loaded, images)
    names = loaded.preprocessing.class_names or [str(i) for i in range(loaded.model.config.num_classes)]
    top = logits.softmax(dim=1).topk(max(1, min(top_k, len(names))), dim=1)
    predictions = [
        Prediction(file, [names[i] for i in indices], values)
        for file, values, indices in zip(good, top.values.tolist(), top.indices.tolist(), strict=True)
    ]
    return predictions, skipped, loaded.path


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a logger's warnings for a moment (its messages are reported another way)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def missing_reason(path: str) -> str | None:
    """Why `path` cannot be an image before trying to decode it (missing, a directory), else None."""
    file = Path(path)
    if not file.exists():
        return "no such file"
    if file.is_dir():
        return "is a directory, not an image file"
    return None
