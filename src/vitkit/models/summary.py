"""Measured size and cost of a model: parameters and forward FLOPs (counted by torch, not by hand)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from vitkit.models.config import ViTConfig
from vitkit.models.registry import VARIANTS, model_config
from vitkit.models.vit import VisionTransformer


@dataclass
class ModelSummary:
    """One row of the model table."""

    name: str
    depth: int
    hidden_dim: int
    mlp_dim: int
    num_heads: int
    params: int
    gflops: float  # forward pass of one image; a multiply-add counts as 2 FLOPs
    img_size: tuple[int, int]


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def summarize(config: ViTConfig) -> ModelSummary:
    """Build the model on the meta device (no memory, no compute) and count its parameters and FLOPs."""
    with torch.device("meta"):
        model = VisionTransformer(config).eval()
        images = torch.empty(1, config.in_chans, *config.img_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(images)
    return ModelSummary(
        name=config.name,
        depth=config.depth,
        hidden_dim=config.hidden_dim,
        mlp_dim=config.mlp_dim,
        num_heads=config.num_heads,
        params=count_parameters(model),
        gflops=counter.get_total_flops() / 1e9,
        img_size=config.img_size,
    )


def model_table(
    names: list[str] | None = None, img_size: int = 224, num_classes: int = 1000, patch_size: int = 16
) -> list[ModelSummary]:
    """Summaries of the given names (default: every width of the variant table at `patch_size`)."""
    names = names or [f"{width}/{patch_size}" for width in VARIANTS]
    return [summarize(model_config(name, img_size=img_size, num_classes=num_classes)) for name in names]
