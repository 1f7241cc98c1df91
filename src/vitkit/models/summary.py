"""Measured size and cost of a model (ViT, hybrid or ConvNet): parameters and forward FLOPs (counted by torch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from vitkit.models.config import ViTConfig
from vitkit.models.registry import VARIANTS, ArchConfig, architecture_of, build_model, model_config


@dataclass
class ModelSummary:
    """One row of the model table (ConvNets: depth in weighted layers, hidden_dim the last width, no MLP/heads)."""

    name: str
    depth: int
    hidden_dim: int
    mlp_dim: int
    num_heads: int
    params: int
    gflops: float  # forward pass of one image; a multiply-add counts as 2 FLOPs
    img_size: tuple[int, int]
    architecture: str = "vit"
    num_classes: int = 1000


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def summarize(config: ArchConfig) -> ModelSummary:
    """Build the model on the meta device (no memory, no compute) and count its parameters and FLOPs."""
    with torch.device("meta"):
        model = build_model(config).eval()
        images = torch.empty(1, config.in_chans, *config.img_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(images)
    vit = isinstance(config, ViTConfig)
    return ModelSummary(
        name=config.name,
        depth=config.depth,
        hidden_dim=config.hidden_dim if vit else config.num_features,
        mlp_dim=config.mlp_dim if vit else 0,
        num_heads=config.num_heads if vit else 0,
        params=count_parameters(model),
        gflops=counter.get_total_flops() / 1e9,
        img_size=config.img_size,
        architecture=architecture_of(config),
        num_classes=config.num_classes,
    )


def model_table(
    names: list[str] | None = None, img_size: int | None = 224, num_classes: int | None = 1000, patch_size: int = 16
) -> list[ModelSummary]:
    """Summaries of the given names (default: every width of the variant table at `patch_size`).

    `img_size` / `num_classes` None keep each name's own (224 and 1000 for ViTs and BiT, 32 and 10 for CIFAR).
    """
    names = names or [f"{width}/{patch_size}" for width in VARIANTS]
    return [summarize(model_config(name, img_size=img_size, num_classes=num_classes)) for name in names]
