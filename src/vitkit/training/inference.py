"""Using a trained checkpoint: find it in a run directory, evaluate it on a dataset, predict labels for image files."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitkit.checkpoints import load
from vitkit.checkpoints.native import is_native_checkpoint, read_native_document, resolve_checkpoint_dir
from vitkit.data import DataConfig, EvalTransform, SkippedFile, load_dataset, load_images
from vitkit.models import VisionTransformer
from vitkit.training.config import TrainConfig
from vitkit.training.evaluate import EvalResult, evaluate
from vitkit.training.runtime import autocast, resolve_device

log = logging.getLogger("vitkit.training")

PREDICT_CHUNK = 64  # images decoded and classified at a time


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, given either itself or a run directory (whose best checkpoint is used)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give a run directory (runs/NAME) or a checkpoint directory")
    for candidate in (path / "checkpoints" / "best", path / "checkpoints" / "last"):
        resolved = resolve_checkpoint_dir(candidate)
        if is_native_checkpoint(resolved):
            return resolved
    if is_native_checkpoint(path):
        return path
    raise ValueError(
        f"{path} is neither a run directory with checkpoints/best nor a vitkit checkpoint directory (config.json "
        "+ model.safetensors); train one with `vitkit train` or convert one with `vitkit convert`"
    )


@dataclass
class Preprocessing:
    """How a checkpoint's inputs were prepared in training: resolution and normalisation (and where its data was)."""

    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    data: dict[str, Any]
    precision: str
    training_data: dict[str, Any]  # the full data section of the training recipe (empty for other checkpoints)


def preprocessing(checkpoint: Path, model: VisionTransformer) -> Preprocessing:
    """The data settings `vitkit train` stores in checkpoint metadata; other checkpoints get 0.5 at their own size."""
    metadata = read_native_document(checkpoint).get("metadata") or {}
    data = metadata.get("data") or {}
    precision = metadata.get("precision", "fp32")
    return Preprocessing(
        img_size=int(data.get("img_size", model.config.img_size[0])),
        mean=tuple(data.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(data.get("std", (0.5, 0.5, 0.5))),
        data=data,
        precision=precision if precision != "fp16" else "fp32",
        training_data=(metadata.get("training") or {}).get("data") or {},
    )


def load_for_inference(path: str | Path, device: str) -> tuple[VisionTransformer, Preprocessing, Path, torch.device]:
    """The model of a run or checkpoint directory, in eval mode on `device`, and its preprocessing."""
    checkpoint = resolve_checkpoint(path)
    target = resolve_device(device)
    model = load(checkpoint).to(target).eval()
    return model, preprocessing(checkpoint, model), checkpoint, target


def evaluate_checkpoint(
    path: str | Path,
    data_path: str | None = None,
    *,
    split: str = "val",
    batch_size: int = 256,
    device: str = "auto",
    precision: str | None = None,
) -> tuple[EvalResult, Path]:
    """Top-1/top-5/per-class accuracy of a checkpoint on a split of `data_path` (default: the data it was trained on).

    The split is made as in training (same validation fraction and seed), so `--split val` of the training
    data is the held-out set the run reported.
    """
    model, prep, checkpoint, target = load_for_inference(path, device)
    config = eval_data_config(prep, data_path)
    data_path = config.path
    splits = load_dataset(config)
    check_class_names(model, splits.class_names, checkpoint, data_path)
    source = {"val": splits.val, "train": splits.train}.get(split)
    if source is None:
        raise ValueError(f"--split must be val or train, got {split!r}")
    if len(source) == 0:
        raise ValueError(f"the {split} split of {data_path} is empty")
    transform = EvalTransform(prep.img_size, prep.mean, prep.std).to(target)
    result = evaluate(
        model, source, transform, batch_size=batch_size, device=target, precision=precision or prep.precision
    )
    return result, checkpoint


def eval_data_config(prep: Preprocessing, data_path: str | None) -> DataConfig:
    """The training run's data config (its split, limits and cache) when evaluating its own data, else a fresh one."""
    trained_on = prep.training_data.get("path") or prep.data.get("path")
    if data_path is None and not trained_on:
        raise ValueError("the checkpoint does not record its training data; pass --data PATH")
    if prep.training_data and data_path in (None, trained_on):
        training_data = dict(prep.training_data)
        absolute = prep.data.get("absolute_path")
        if data_path is None and absolute and not Path(trained_on).exists() and Path(absolute).exists():
            training_data["path"] = absolute  # a relative path, and eval runs from another directory
        return TrainConfig().replace({"data": training_data}, origin="checkpoint metadata").data
    return DataConfig(
        path=data_path or trained_on,
        img_size=prep.img_size,
        mean=prep.mean,
        std=prep.std,
        val_fraction=prep.data.get("val_fraction", 0.1),
        seed=prep.data.get("seed", 0),
    )


def check_class_names(model: VisionTransformer, names: list[str], checkpoint: Path, data_path: str) -> None:
    """The dataset's classes must be the head's classes, in the same order."""
    if model.class_names is None:
        if len(names) != model.config.num_classes:
            raise ValueError(
                f"{data_path} has {len(names)} classes but the model's head has {model.config.num_classes}"
            )
        return
    if list(model.class_names) != list(names):
        missing = sorted(set(model.class_names) - set(names))
        extra = sorted(set(names) - set(model.class_names))
        detail = (
            f"missing from the data: {missing}; not in the model: {extra}" if missing or extra else "different order"
        )
        raise ValueError(f"the classes of {data_path} do not match those {checkpoint} was trained on ({detail})")


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
def predict_files(
    path: str | Path, images: list[str], *, top_k: int = 5, device: str = "auto"
) -> tuple[list[Prediction], list[SkippedFile], Path]:
    """Classify image files with a checkpoint; files that cannot be read are returned with the reason."""
    model, prep, checkpoint, target = load_for_inference(path, device)
    names = model.class_names or [str(i) for i in range(model.config.num_classes)]
    k = max(1, min(top_k, len(names)))
    predictions, skipped = [], []
    for start in range(0, len(images), PREDICT_CHUNK):
        chunk = images[start : start + PREDICT_CHUNK]
        readable = []
        for image in chunk:
            reason = missing_reason(image)
            if reason:
                skipped.append(SkippedFile(image, reason))
            else:
                readable.append(image)
        with warnings.catch_warnings(), quiet_logger("vitkit.data"):
            warnings.simplefilter("ignore")  # the caller reports every skipped file itself
            batch, good, bad = load_images(readable, prep.img_size, prep.mean, prep.std)
        skipped.extend(bad)
        if not good:
            continue
        with autocast(prep.precision, target):
            probabilities = model(batch.to(target)).float().softmax(dim=1)
        top = probabilities.topk(k, dim=1)
        for file, values, indices in zip(good, top.values.tolist(), top.indices.tolist(), strict=True):
            predictions.append(Prediction(file, [names[i] for i in indices], values))
    order = {image: i for i, image in enumerate(images)}
    skipped.sort(key=lambda s: order.get(s.path, len(order)))
    return predictions, skipped, checkpoint


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
