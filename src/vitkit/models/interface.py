"""What every vitkit model family offers the rest of the toolkit, so that no caller probes a model's attributes.

Named as timm's models name theirs (`forward_features`, `forward_head`, `no_weight_decay`), plus what
training and preflight need to know about a family:

    forward_features(images)             -> features (a ViT's tokens, a ConvNet's last feature map)
    forward_head(features, pre_logits)   -> logits, or the heads' input with `pre_logits`
    forward_heads(features)              -> {"cls": ..., "dist": ...}: each head's logits
    no_weight_decay()                    -> parameter names AdamW leaves undecayed
    block_list()                         -> the repeated blocks in order (layer-wise decay, FSDP units,
                                            activation checkpointing), or None
    embedding_parameters()               -> what precedes the first block (layer 0 of layer-wise decay)
    patch_embedding()                    -> the module `freeze_patch_embed` fixes, or None
    patch_size                           -> (h, w) the input must be a multiple of, or None (any size)
    attention_shape()                    -> heads, tokens and head width of the attention, or None
    has_distillation_head                -> DeiT's second head ("dist" in forward_heads)

A new family subclasses `Model` and implements the two abstract methods; the defaults describe a model
without blocks, patches, attention or a second head (a ConvNet). Foreign modules (a timm teacher) do not
subclass it: the one adapter `labels_of` reads what a teacher predicts from either kind.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import torch
from torch import nn

from vitkit.models.config import ConfigDict


class AttentionShape(NamedTuple):
    """The shape of one attention call at the configured resolution (for the runtime's kernel probe)."""

    heads: int
    tokens: int  # prefix tokens + patches
    head_dim: int


class Model(nn.Module, abc.ABC):
    """The interface every vitkit model family implements (see the module docstring)."""

    config: ConfigDict  # the family's dataclass config, serialised into every checkpoint
    class_names: list[str] | None  # labels of the head's outputs, set by checkpoint loading

    @abc.abstractmethod
    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), normalised -> the features the head reads."""

    @abc.abstractmethod
    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> logits (B, num_classes); with `pre_logits`, the head's input (B, D) instead."""

    @abc.abstractmethod
    def reset_head(self) -> None:
        """Re-initialise the classification head(s) as the config says."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), normalised -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(images))

    def forward_heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head by name; one head ("cls") unless the family has more."""
        return {"cls": self.forward_head(features)}

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be decayed (default: biases and norm parameters, every 1-D tensor)."""
        return {name for name, param in self.named_parameters() if param.ndim <= 1}

    def block_list(self) -> nn.ModuleList | None:
        """The repeated blocks, input to output, or None for a family without them."""
        return None

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The parameters before the first block (layer 0 of layer-wise decay); none without blocks."""
        return []

    def patch_embedding(self) -> nn.Module | None:
        """The module that embeds the input patches (what `freeze_patch_embed` fixes), or None."""
        return None

    @property
    def patch_size(self) -> tuple[int, int] | None:
        """(height, width) every input side must be a multiple of, or None when any size works."""
        return None

    def attention_shape(self) -> AttentionShape | None:
        """The attention's (heads, tokens, head width) at the configured resolution, or None without attention."""
        return None

    @property
    def has_distillation_head(self) -> bool:
        """Whether the model has DeiT's distillation head ("dist" in `forward_heads`)."""
        return False


class Labels(NamedTuple):
    """What a classifier says it predicts: the class count and the class names, each None when it does not say."""

    count: int | None
    names: list[str] | None


def labels_of(module: nn.Module) -> Labels:
    """The labels of a vitkit model or of a foreign classifier (timm's `num_classes`; names when it records them).

    The one place that reads a module outside this interface, for teachers built by other libraries.
    """
    if isinstance(module, Model):
        return Labels(module.config.num_classes, module.class_names)
    count, names = getattr(module, "num_classes", None), getattr(module, "class_names", None)
    return Labels(count if isinstance(count, int) else None, list(names) if names is not None else None)
