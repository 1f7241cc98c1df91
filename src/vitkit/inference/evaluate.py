"""Accuracy of a model on a labelled source (top-1, top-5, loss, per-class, confusion), and of a checkpoint on data.

`evaluate_checkpoint` picks the images: the run's own data split as in training, or other data whole unless
it brings its own train/val split (see `select_eval_data`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from vitkit.data import DataConfig, EvalTransform, ImageSource, load_dataset, make_loader
from vitkit.data.cifar import find_cifar
from vitkit.data.hf import has_own_split as hf_has_own_split
from vitkit.data.hf import is_hf_path
from vitkit.data.imagefolder import has_split_folders
from vitkit.data.loader import eval_loader
from vitkit.data.shards.format import read_index, shard_root
from vitkit.errors import UsageError
from vitkit.inference.device import INFERENCE_PRECISIONS, autocast
from vitkit.inference.loading import Preprocessing, load_for_inference, require_head
from vitkit.inference.tta import tta_logits
from vitkit.models import Model, VisionTransformer, labels_of

SPLITS = ("val", "train", "all")


@dataclass
class EvalResult:
    """What `evaluate` measured; accuracies are percentages."""

    top1: float
    top5: float
    loss: float
    images: int
    confusion: torch.Tensor  # (K, K) int64, rows: true class, columns: predicted class
    class_names: list[str] = field(default_factory=list)
    logits: torch.Tensor | None = None  # (N, K) float32 on the CPU, in source order (only when asked for)
    heads: dict[str, EvalResult] = field(default_factory=dict)  # each head on its own ("cls", "dist"), when asked

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
            **self.scores(),
            "images": self.images,
            "per_class": {k: (None if v != v else round(v, 4)) for k, v in self.per_class.items()},
            "confusion_matrix": self.confusion.tolist(),
            "class_names": self.class_names,
            **({"heads": {name: head.scores() for name, head in self.heads.items()}} if self.heads else {}),
        }

    def scores(self) -> dict[str, float]:
        """Top-1, top-5 and loss, rounded for JSON."""
        return {"top1": round(self.top1, 4), "top5": round(self.top5, 4), "loss": round(self.loss, 6)}


@torch.no_grad()
def evaluate(
    model: Model,
    source: ImageSource,
    transform: EvalTransform,
    *,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    keep_logits: bool = False,
    tta: str = "none",
    heads: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> EvalResult:
    """Run `model` over every image of `source` once, in order, under the given precision.

    `tta` averages the logits of test-time views of each image (`vitkit.inference.tta`: none, flip, multicrop).
    `heads` also scores each head of a ViT on its own (DeiT's class and distillation heads) in the same pass, in
    `EvalResult.heads`. With `world_size` > 1 (called on every rank of a torchrun job) each rank scores its own
    contiguous part of `source` and the counts are summed over the ranks: every image is counted once.
    """
    if keep_logits and world_size > 1:
        raise UsageError("keep_logits needs the whole source on one process; call evaluate with world_size=1")
    num_classes = len(source.class_names)
    tallies: dict[str, Tally] = {}
    kept = []
    for inputs, labels in eval_batches(model, source, transform, batch_size, device, rank, world_size):
        with autocast(precision, device):
            outputs = tta_logits(lambda view: head_logits(model, view, heads), inputs, tta)
        if keep_logits:
            kept.append(outputs[AVERAGE].cpu())
        for name, logits in outputs.items():
            tallies.setdefault(name, Tally(num_classes, device)).add(logits, labels)
    if world_size > 1:
        for name in sorted(tallies):  # the same order on every rank
            tallies[name].all_reduce()
    average = tallies.pop(AVERAGE, None) or Tally(num_classes, device)
    result = average.result(source)
    result.heads = {name: tally.result(source) for name, tally in tallies.items()}
    if keep_logits:
        result.logits = torch.cat(kept) if kept else torch.empty(0, num_classes)
    return result


def eval_batches(
    model: torch.nn.Module,
    source: ImageSource,
    transform: EvalTransform,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The evaluation loop every evaluation shares: (inputs, labels) of every image of `source` once, in order,
    transformed on `device`, with `model` in eval mode until the loop ends (its mode is restored then).

    With `world_size` > 1, only rank `rank`'s contiguous part (`vitkit.data.loader.rank_rows`), padded so every
    rank runs the same number of batches; padding rows carry the label -1 and must not be counted (`Tally` skips
    them). The caller runs the model under `autocast` and `torch.no_grad` (as `evaluate` and the objectives'
    `validate`).
    """
    was_training = model.training
    model.eval()
    if world_size > 1:
        loader, real = eval_loader(source, batch_size, rank=rank, world_size=world_size, device=device)
    else:
        loader, real = make_loader(source, batch_size, shuffle=False, seed=0, epoch=0, device=device), len(source)
    seen = 0
    try:
        for images, labels in loader:
            if seen + len(labels) > real:
                labels = labels.clone()
                labels[max(0, real - seen) :] = -1
            seen += len(labels)
            yield transform(images), labels
    finally:
        model.train(was_training)


AVERAGE = "average"  # the model's own output: with several heads, their mean (DeiT's inference)


def head_logits(model: Model, inputs: torch.Tensor, heads: bool) -> dict[str, torch.Tensor]:
    """The model's logits ("average"), and with `heads` those of each head ("cls", "dist"), as float32."""
    if not heads:
        return {AVERAGE: model(inputs).float()}
    # Every family has `forward_heads`; a ConvNet's one head would only repeat the average, so it is refused.
    if not isinstance(model, VisionTransformer):
        raise UsageError(
            f"per-head evaluation needs a ViT (forward_heads); {type(model).__name__} has a single head: drop --heads"
        )
    features = model.forward_features(inputs)
    outputs = {AVERAGE: model.forward_head(features), **model.forward_heads(features)}
    return {name: logits.float() for name, logits in outputs.items()}


class Tally:
    """Running confusion matrix, top-5 hits and summed loss of one output over the batches of an evaluation."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.top5_hits = torch.zeros((), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one batch (rows labelled -1 are padding of a distributed evaluation and are not counted)."""
        num_classes = self.confusion.shape[0]
        if labels.numel() and int(labels.min()) < 0:
            keep = labels >= 0
            logits, labels = logits[keep], labels[keep]
        self.loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        self.top5_hits += (logits.topk(min(5, num_classes), dim=1).indices == labels[:, None]).any(1).sum()
        self.confusion.view(-1).index_add_(0, labels * num_classes + logits.argmax(1), torch.ones_like(labels))

    def all_reduce(self) -> None:
        """Sum the counts of every rank of the process group (each rank counted its own images)."""
        import torch.distributed as dist

        for tensor in (self.confusion, self.top5_hits, self.loss_sum):
            dist.all_reduce(tensor)

    def result(self, source: ImageSource) -> EvalResult:
        """The accuracies (%) and mean loss over every image of `source`."""
        total = max(1, len(source))
        return EvalResult(
            top1=self.confusion.diag().sum().item() / total * 100,
            top5=self.top5_hits.item() / total * 100,
            loss=self.loss_sum.item() / total,
            images=len(source),
            confusion=self.confusion.cpu(),
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


@dataclass(frozen=True)
class EvalData:
    """The images an evaluation reads: the dataset, which part of it, and a sentence saying which and why."""

    path: str  # as given to `load_dataset`
    split: str  # "val", "train" or "all"
    description: str


class Evaluation(NamedTuple):
    """What `evaluate_checkpoint` returns."""

    result: EvalResult
    checkpoint: Path  # the resolved checkpoint
    data: EvalData
    preprocessing: Preprocessing


def evaluate_checkpoint(
    source: str | Path,
    data_path: str | Path | None = None,
    *,
    split: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    precision: str | None = None,
    keep_logits: bool = False,
    heads: bool = False,
    tta: str = "none",
) -> Evaluation:
    """Top-1/top-5/per-class accuracy of a checkpoint on `data_path` (default: the data it was trained on).

    Which images: see `select_eval_data`. The run's own data is split as in training (same validation
    fraction and seed), so its val split is the held-out set the run reported. `heads` also scores each
    head of a DeiT-style model on its own (`result.heads`). `tta` averages test-time views (none, flip, multicrop).
    """
    if precision is not None and precision not in INFERENCE_PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    model, prep, checkpoint, target = load_for_inference(source, device)
    require_head(model, checkpoint)
    images, data = images_to_evaluate(model, prep, checkpoint, data_path, split)
    transform = EvalTransform(prep.img_size, prep.mean, prep.std).to(target)
    result = evaluate(
        model,
        images,
        transform,
        batch_size=batch_size,
        device=target,
        precision=precision or prep.precision,
        keep_logits=keep_logits,
        heads=heads,
        tta=tta,
    )
    return Evaluation(result, checkpoint, data, prep)


def images_to_evaluate(
    model: torch.nn.Module, prep: Preprocessing, checkpoint: Path | str, data_path: str | Path | None, split: str | None
) -> tuple[ImageSource, EvalData]:
    """The images `evaluate_checkpoint` scores (see `select_eval_data`), their classes checked against the model's."""
    config, data = select_eval_data(prep, data_path, split)
    splits = load_dataset(config)
    check_class_names(model, splits.class_names, checkpoint, config.path)
    # The whole of an in-memory dataset is a joined copy; returning only it lets the two splits be released.
    images = splits.whole() if data.split == "all" else getattr(splits, data.split)
    if len(images) == 0:
        raise UsageError(f"nothing to evaluate: {data.description} holds no images")
    return images, data


def select_eval_data(
    prep: Preprocessing, data_path: str | Path | None = None, split: str | None = None
) -> tuple[DataConfig, EvalData]:
    """The data config to load and the part of it to evaluate.

    The run's own data (no `data_path`, or the path it was trained on) is configured as in training and
    its val split is the default. Other data is evaluated whole ("all") unless it brings its own split
    (train/ and val/ folders, CIFAR's train/test files), whose val part is then the default. An explicit
    `split` is honoured, and the description says which images were read.
    """
    if split is not None and split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    data_path = None if data_path is None else str(data_path)
    trained_on = recorded_data_path(prep)
    if data_path is None and trained_on is None:
        raise UsageError(
            "the checkpoint does not record the data it was trained on (foreign weights, or saved without "
            "metadata); pass --data PATH"
        )
    own = data_path is None or is_training_data(data_path, prep)
    config = own_data_config(prep, data_path) if own else other_data_config(prep, data_path)
    presplit = has_own_split(config.path)
    chosen = split or ("val" if own or presplit else "all")
    return config, EvalData(config.path, chosen, describe(config, chosen, own, presplit))


def recorded_data_path(prep: Preprocessing) -> str | None:
    """The dataset path the checkpoint's metadata names, if any."""
    path = prep.training_data.get("path") or prep.data.get("path")
    return path if isinstance(path, str) else None


def is_training_data(data_path: str, prep: Preprocessing) -> bool:
    """Whether `data_path` names the data the checkpoint was trained on (as written, or the same folder)."""
    trained_on = recorded_data_path(prep)
    if trained_on is None:
        return False
    if data_path == trained_on:
        return True
    if "digits" in (data_path, trained_on):
        return False
    given = Path(data_path).expanduser().resolve()
    absolute = prep.data.get("absolute_path")
    return given == Path(trained_on).expanduser().resolve() or (isinstance(absolute, str) and given == Path(absolute))


def own_data_config(prep: Preprocessing, data_path: str | None) -> DataConfig:
    """The training run's data config (its split, limits and cache), found from another directory if need be."""
    path = data_path or recorded_data_path(prep)
    absolute = prep.data.get("absolute_path")
    if data_path is None and isinstance(absolute, str) and not Path(path).exists() and Path(absolute).exists():
        path = absolute  # a relative path, and eval runs from another directory
    return data_config(prep.training_data or prep.data, path=path, img_size=prep.img_size, mean=prep.mean, std=prep.std)


def other_data_config(prep: Preprocessing, data_path: str) -> DataConfig:
    """A fresh data config for other data, at the checkpoint's resolution (its split settings for --split)."""
    split_settings = {key: prep.data[key] for key in ("val_fraction", "seed") if key in prep.data}
    return data_config(split_settings, path=data_path, img_size=prep.img_size, mean=prep.mean, std=prep.std)


def data_config(recorded: dict[str, Any], **values: Any) -> DataConfig:
    """A DataConfig from a recorded data section (keys it does not know are ignored) and explicit `values`."""
    known = {f.name for f in dataclasses.fields(DataConfig)}
    fields = {key: tuple(v) if isinstance(v, list) else v for key, v in recorded.items() if key in known}
    try:
        return DataConfig(**{**fields, **values})
    except TypeError as error:
        raise UsageError(f"the checkpoint's recorded data settings are unusable ({error}); pass --data PATH") from error


def has_own_split(path: str) -> bool:
    """Whether a dataset comes split: train/ and val/ folders, or CIFAR's train and test files."""
    if is_hf_path(path):
        return hf_has_own_split(path)
    if shard_root(path) is not None:
        return "val" in read_index(shard_root(path))[0].splits
    if path == "digits" or not Path(path).exists():
        return False
    return find_cifar(path) is not None or (Path(path).is_dir() and has_split_folders(Path(path)))


def describe(config: DataConfig, split: str, own: bool, presplit: bool) -> str:
    """Which images an evaluation reads, in words."""
    where = config.path if config.path == "digits" else str(Path(config.path))
    if split == "all":
        if own or presplit:
            return f"all images of {where} (train and val together)"
        return f"all images of {where} (not the checkpoint's training data, and no train/ and val/ sub-folders)"
    if presplit:
        return f"the {split} split of {where} (its own train/val split)"
    how = f"{config.val_fraction:g} of each class held out for val, seed {config.seed}"
    return f"the {split} split of {where} ({how}{', as in training' if own else ''})"


def check_class_names(
    model: torch.nn.Module, names: list[str], checkpoint: Path | str, data_path: str, advice: str = ""
) -> None:
    """The dataset's classes must be the head's classes, in the same order (`advice` ends each message).

    A model that records no class names is checked by its class count, when it has one.
    """
    labels = labels_of(model)
    recorded = labels.names
    if recorded is None:
        if labels.count is not None and len(names) != labels.count:
            raise UsageError(f"{data_path} has {len(names)} classes but the model's head has {labels.count}{advice}")
        return
    if list(recorded) != list(names):
        missing = sorted(set(recorded) - set(names))
        extra = sorted(set(names) - set(recorded))
        detail = (
            f"missing from the data: {missing}; not in the model: {extra}" if missing or extra else "different order"
        )
        raise UsageError(
            f"the classes of {data_path} do not match those {checkpoint} was trained on ({detail}){advice}"
        )
