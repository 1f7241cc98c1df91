"""Read any supported checkpoint and detect its format by content, returning vitkit names and a config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vitkit.checkpoints.native import is_native_checkpoint, read_native
from vitkit.models import ViTConfig


@dataclass
class Checkpoint:
    """A checkpoint translated to vitkit: its config, its state dict in vitkit key names, and where it came from."""

    config: ViTConfig
    state_dict: dict[str, torch.Tensor]
    format: str  # "vitkit", "timm", "hf" or "jax"
    origin: str  # the path, for messages
    heads_inferred: bool = False  # fused weights do not show the head count: a model name may fix it
    class_names: list[str] | None = None


def read_checkpoint(source: str | Path) -> Checkpoint:
    """Read a native directory (other formats are added by the interop readers)."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {source} does not exist")
    if path.is_dir() and is_native_checkpoint(path):
        config, state, document = read_native(path)
        return Checkpoint(config, state, "vitkit", str(path), class_names=document.get("class_names"))
    raise ValueError(f"{source} is not a checkpoint vitkit can read")
