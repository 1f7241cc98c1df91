"""Per-channel normalisation, `(x - mean) / std`, with as many channels as `mean` has values."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vitkit.errors import UsageError


def channel_values(values: Sequence[float]) -> Tensor:
    """One float per channel as a (1, C, 1, 1) tensor that broadcasts over (B, C, H, W) images."""
    return torch.tensor(tuple(values), dtype=torch.float32).view(1, -1, 1, 1)


class Normalize(nn.Module):
    """`(x - mean) / std` per channel, and its inverse; the channel count is len(mean), checked against the images."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or min(std) <= 0:
            raise UsageError(f"mean and std need one value per channel and std > 0, got mean={mean} std={std}")
        self.register_buffer("mean", channel_values(mean), persistent=False)
        self.register_buffer("std", channel_values(std), persistent=False)

    @property
    def channels(self) -> int:
        """The number of channels this normalisation expects."""
        return self.mean.shape[1]

    def forward(self, images: Tensor) -> Tensor:
        """Normalise float images (B, C, H, W) in [0, 1]."""
        return (self._checked(images) - self.mean) / self.std

    def inverse(self, images: Tensor) -> Tensor:
        """Undo `forward`: normalised images back to [0, 1] pixel values (not clamped)."""
        return self._checked(images) * self.std + self.mean

    def _checked(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise UsageError(
                f"images of shape {tuple(images.shape)} do not have the {self.channels} channels of the normalisation "
                f"mean/std; give data.mean and data.std one value per image channel"
            )
        return images
