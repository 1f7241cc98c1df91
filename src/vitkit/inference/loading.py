"""Find a checkpoint, load it for inference, and read how its inputs must be prepared (see the package docstring)."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from vitkit.checkpoints import hub, load
from vitkit.checkpoints.formats import CONFIG_FILE, WEIGHT_FILES
from vitkit.checkpoints.native import is_native_checkpoint, read_native_document, resolve_checkpoint_dir
from vitkit.errors import MissingPathError, UsageError
from vitkit.inference.device import INFERENCE_PRECISIONS, resolve_device
from vitkit.models import Model

log = logging.getLogger("vitkit.inference")

METADATA = "checkpoint metadata"
NO_METADATA = "default (no metadata)"
HF_PREPROCESSOR_FILE = "preprocessor_config.json"  # transformers' image-processor settings, beside config.json

# What each format's released weights expect when a checkpoint records nothing: (mean, std, convention).
HALF = (0.5, 0.5, 0.5)
CONVENTIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], str]] = {
    "vitkit": (HALF, HALF, "vitkit's DataConfig default"),
    "jax": (HALF, HALF, "the original JAX ViT's [-1, 1] input scaling"),
    "hf": (HALF, HALF, "transformers' ViTImageProcessor default"),
    # timm's ViT configs use 0.5 (the Inception scaling); DeiT weights are the exception (ImageNet mean/std).
    "timm": (HALF, HALF, "timm's ViT default (DeiT weights use ImageNet's 0.485/0.456/0.406, 0.229/0.224/0.225)"),
}


def resolve_checkpoint(source: str | Path) -> Path:
    """The checkpoint `source` names, as a local path.

    A run directory gives its checkpoints/best (else checkpoints/last); a hub id (hf-hub:..., timm:...) is
    downloaded to the hub cache; a checkpoint directory or weights file of any format `vitkit.load` reads is
    itself (a `<dir>.old` left by an interrupted save is recovered).
    """
    if hub.is_hub_id(source):
        return hub.download(str(source))
    path = Path(source)
    if not path.exists():
        raise MissingPathError(
            f"checkpoint {path} not found (the path does not exist); give a run directory (runs/NAME), a checkpoint "
            "directory or weights file, or a hub id (hf-hub:<owner>/<repo>, timm:<model>.<tag>)"
        )
    if (path / "checkpoints").is_dir():
        for name in ("best", "last"):
            candidate = resolve_checkpoint_dir(path / "checkpoints" / name)
            if is_native_checkpoint(candidate):
                return candidate
        raise UsageError(
            f"{path} is a run directory without a readable checkpoint: neither checkpoints/best nor "
            "checkpoints/last holds config.json + model.safetensors (did the run finish an epoch?)"
        )
    if path.is_dir() and not any((path / name).is_file() for name in (CONFIG_FILE, *WEIGHT_FILES)):
        raise UsageError(
            f"{path} is neither a run directory (with checkpoints/best) nor a checkpoint directory (config.json + "
            "weights); train one with `vitkit train` or convert one with `vitkit convert`"
        )
    return resolve_checkpoint_dir(path)


@dataclass
class Preprocessing:
    """How a checkpoint's inputs are prepared: resolution, normalisation, precision, and where that was read."""

    img_size: int  # side of the square input in pixels
    mean: tuple[float, ...]  # one value per input channel
    std: tuple[float, ...]
    class_names: list[str] | None = None  # the head's labels, in order (None: the checkpoint has none)
    precision: str = "fp32"  # "fp32" or "bf16"
    data: dict[str, Any] = field(default_factory=dict)  # metadata["data"] as recorded ({} without metadata)
    training_data: dict[str, Any] = field(default_factory=dict)  # metadata["training"]["data"] ({} without)
    source: str = METADATA  # METADATA, a foreign settings file, or "default (no metadata): <convention>"

    @property
    def from_metadata(self) -> bool:
        """Whether mean and std were recorded with the checkpoint (not a format's convention)."""
        return not self.source.startswith(NO_METADATA)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: size, normalisation, precision and their source."""
        return {
            "img_size": self.img_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "precision": self.precision,
            "source": self.source,
        }


def read_preprocessing(path: str | Path, model: Model) -> Preprocessing:
    """The preprocessing of the checkpoint at `path` (resolved, local) that `model` was loaded from.

    Native checkpoints: their metadata (keys in the package docstring). Foreign ones: transformers'
    preprocessor_config.json or timm's hub config.json when present, else the format's convention, named in
    `source` as "default (no metadata): ..." and logged as a warning, never guessed silently.
    """
    path = Path(path)
    metadata = native_metadata(path)
    recorded = as_dict(metadata.get("data"))
    img_size = recorded.get("img_size", model.config.img_size[0])
    if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size <= 0:
        raise UsageError(f"{path}: metadata data.img_size must be a positive integer, got {img_size!r}")
    base = {
        "img_size": img_size,
        "class_names": model.class_names,
        "precision": metadata.get("precision") if metadata.get("precision") in INFERENCE_PRECISIONS else "fp32",
        "data": recorded,
        "training_data": as_dict(as_dict(metadata.get("training")).get("data")),
    }
    if recorded.get("mean") is not None and recorded.get("std") is not None:
        channels = model.config.in_chans
        mean = per_channel(recorded["mean"], "mean", path, channels)
        std = per_channel(recorded["std"], "std", path, channels)
        return Preprocessing(mean=mean, std=std, source=METADATA, **base)
    found = foreign_normalization(path, model.config.in_chans)
    if found is not None:
        return Preprocessing(mean=found[0], std=found[1], source=found[2], **base)
    source_format = model.config.extra.get("source_format", "vitkit")
    mean, std, convention = CONVENTIONS.get(source_format, CONVENTIONS["vitkit"])
    return Preprocessing(mean=mean, std=std, source=f"{NO_METADATA}: {convention}", **base)


def native_metadata(path: Path) -> dict[str, Any]:
    """The free-form metadata of a native checkpoint ({} for other formats or when it has none)."""
    if not is_native_checkpoint(path):
        return {}
    return as_dict(read_native_document(path).get("metadata"))


def foreign_normalization(path: Path, channels: int = 3) -> tuple[tuple[float, ...], tuple[float, ...], str] | None:
    """(mean, std, source) from the settings file a transformers or timm-hub directory ships, if any."""
    if not path.is_dir():
        return None
    hf_file, timm_file = path / HF_PREPROCESSOR_FILE, path / CONFIG_FILE
    if hf_file.is_file():
        settings = read_settings(hf_file)
        if settings.get("do_normalize") is False:  # transformers then only rescales pixels to [0, 1]
            return (0.0,) * channels, (1.0,) * channels, f"{HF_PREPROCESSOR_FILE} (do_normalize: false)"
        found = normalization_in(settings, "image_mean", "image_std", hf_file, channels)
        if found is not None:
            return (*found, HF_PREPROCESSOR_FILE)
    if timm_file.is_file() and not is_native_checkpoint(path):
        found = normalization_in(
            as_dict(read_settings(timm_file).get("pretrained_cfg")), "mean", "std", timm_file, channels
        )
        if found is not None:
            return (*found, f"{CONFIG_FILE} (timm pretrained_cfg)")
    return None


def normalization_in(
    settings: dict[str, Any], mean_key: str, std_key: str, file: Path, channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) under the given keys of a settings dict, or None when either is absent."""
    if settings.get(mean_key) is None or settings.get(std_key) is None:
        return None
    mean = per_channel(settings[mean_key], mean_key, file, channels)
    return mean, per_channel(settings[std_key], std_key, file, channels)


def read_settings(path: Path) -> dict[str, Any]:
    """A JSON settings file as a dict, with a corrupt one reported by name."""
    try:
        return as_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not valid JSON ({error}); fetch or export it again") from error


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a mapping, else {} (metadata is free-form JSON: read it defensively)."""
    return value if isinstance(value, dict) else {}


def per_channel(value: Any, key: str, where: Path, channels: int) -> tuple[float, ...]:
    """A per-channel setting as one float per input channel of the model (one number applies to all)."""
    values = [value] * channels if isinstance(value, (int, float)) else value
    if (
        not isinstance(values, (list, tuple))
        or len(values) != channels
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    ):
        raise UsageError(
            f"{where}: {key} must be {channels} numbers (one per input channel of the model), got {value!r}"
        )
    if key.endswith("std") and min(values) <= 0:
        raise UsageError(f"{where}: {key} must be positive, got {value!r}")
    return tuple(float(v) for v in values)


class LoadedModel(NamedTuple):
    """What `load_for_inference` returns (a tuple, so `model, prep, path, device = ...` works)."""

    model: Model  # in eval mode, on `device`
    preprocessing: Preprocessing
    path: Path  # the resolved checkpoint (a run's checkpoints/best, a hub id's cached files, ...)
    device: torch.device


def load_for_inference(source: str | Path, device: str = "auto") -> LoadedModel:
    """The model `source` names (run dir, checkpoint, weights file or hub id) in eval mode on `device`, and its
    preprocessing."""
    path = resolve_checkpoint(source)
    target = resolve_device(device)
    model = load(path).to(target).eval()
    prep = read_preprocessing(path, model)
    settings = f"{prep.img_size}px, mean {list(prep.mean)}, std {list(prep.std)}"
    if prep.from_metadata:
        log.info("%s: inputs at %s (from %s)", path, settings, prep.source)
    else:
        convention = prep.source.removeprefix(f"{NO_METADATA}: ")
        log.warning("%s records no preprocessing: inputs at %s, %s", path, settings, convention)
    return LoadedModel(model, prep, path, target)


def with_precision(loaded: LoadedModel, precision: str | None) -> LoadedModel:
    """`loaded` computing in `precision` ("fp32" or "bf16"; None: as the checkpoint says)."""
    if precision is None:
        return loaded
    if precision not in INFERENCE_PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    return loaded._replace(preprocessing=dataclasses.replace(loaded.preprocessing, precision=precision))


def require_head(model: Model, path: Path) -> None:
    """Refuse a model without a classification head where labels are needed (predict, eval)."""
    if model.config.num_classes == 0:
        raise UsageError(
            f"{path} has no classification head (num_classes 0: a feature extractor); fine-tune it on labelled data "
            "with `vitkit train --pretrained` first"
        )
