"""vitkit's own checkpoint: a directory with `config.json` (rebuilds the model) and `model.safetensors`.

config.json records the architecture ("vit", "resnet_cifar", "resnetv2", "vgg_cifar" or "xresnet"); files written
before ConvNets existed have none and hold ViTs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vitkit.errors import MissingPathError, UsageError
from vitkit.models import ArchConfig, Model, architecture_of, config_from_dict

FORMAT_NAME = "vitkit"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a scratch directory that replaces `path` only once everything inside it has been written.

    A kill at any instant leaves either the old directory or the new one complete; during the swap the
    old one briefly sits at `<path>.old`, which `resolve_checkpoint_dir` reports and uses.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        yield scratch
        for file in scratch.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        old = path.with_name(f"{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.rename(path, old)
        os.rename(scratch, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """The directory to read, recovering `<path>.old` if a kill interrupted a swap (said in the log)."""
    path = Path(path)
    old = path.with_name(f"{path.name}.old")
    if not path.exists() and old.exists():
        import logging

        logging.getLogger(__name__).warning(
            "checkpoint %s was being replaced when the run stopped; using %s", path, old
        )
        return old
    return path


def is_native_checkpoint(path: str | Path) -> bool:
    """True for a directory whose config.json was written by `save`."""
    config_file = Path(path) / CONFIG_FILE
    if not config_file.is_file():
        return False
    try:
        return json.loads(config_file.read_text()).get("format") == FORMAT_NAME
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def save(
    model: Model,
    path: str | Path,
    *,
    class_names: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    extra_files: dict[str, Any] | None = None,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write `model` as a native checkpoint directory, atomically; returns the path.

    `class_names` label the head's outputs (used by predict/eval); `metadata` is free-form JSON;
    `extra_files` maps file names to objects saved with `torch.save` in the same atomic write
    (training state for resuming). `state_dict` replaces the model's own (weights gathered from shards).
    """
    config = model.config
    if class_names is not None and len(class_names) != config.num_classes:
        raise UsageError(f"{len(class_names)} class names given for a head of {config.num_classes} classes")
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": architecture_of(config),
        "model": config.to_dict(),
        "class_names": class_names,
        "metadata": metadata or {},
    }
    weights = model.state_dict() if state_dict is None else state_dict
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in weights.items()}
    with atomic_directory(path) as scratch:
        (scratch / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n")
        save_file(state, str(scratch / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
        for name, obj in (extra_files or {}).items():
            torch.save(obj, scratch / name)
    return Path(path)


def read_native(path: str | Path) -> tuple[ArchConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Config, state dict and the rest of config.json (class names, metadata) of a native checkpoint."""
    path = resolve_checkpoint_dir(path)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_file.is_file():
        raise MissingPathError(f"{path} is not a vitkit checkpoint: {CONFIG_FILE} is missing")
    try:
        document = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise UsageError(f"{config_file} is not valid JSON ({error}); the checkpoint is corrupt") from error
    if document.get("format") != FORMAT_NAME:
        raise UsageError(f'{config_file} was not written by vitkit (no "format": "vitkit")')
    if not weights_file.is_file():
        raise MissingPathError(f"{path} has a config but no {WEIGHTS_FILE}")
    config = config_from_dict(document["model"], document.get("architecture", "vit"))
    return config, read_safetensors(weights_file), document


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a .safetensors file, turning a truncated or corrupt file into an error that names it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise UsageError(
            f"cannot read {path}: {error}. The file is truncated or corrupt; export or fetch it again"
        ) from error


def load_class_names(path: str | Path) -> list[str] | None:
    """The class names stored with a native checkpoint (None when it has none)."""
    return read_native_document(path).get("class_names")


def read_native_document(path: str | Path) -> dict[str, Any]:
    """The parsed config.json of a native checkpoint."""
    return json.loads((resolve_checkpoint_dir(path) / CONFIG_FILE).read_text())
