"""Per-channel normalisation, `(x - mean) / std`, with as many channels as `mean` has values: the one place it is
computed (training augmentation and evaluation, masked-patch targets, a teacher's inputs, exported graphs, their
runtime, image loading for prediction and analysis)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vitkit.errors import UsageError


def channel_values(values: Sequence[float], like: Tensor | None = None) -> Tensor:
    """One float per channel as a (1, C, 1, 1) tensor that broadcasts over (B, C, H, W) images (float32 on the CPU,
    or on the device and in the dtype of `like`)."""
    if like is None:
        return torch.tensor(tuple(values), dtype=torch.float32).view(1, -1, 1, 1)
    return torch.tensor(tuple(values), dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def check_channels(images: Tensor, channels: int) -> Tensor:
    """`images` when they are (B, C, H, W) with the normalisation's C channels; otherwise an error that says so."""
    if images.dim() != 4 or images.shape[1] != channels:
        raise UsageError(
            f"images of shape {tuple(images.shape)} do not have the {channels} channels of the normalisation "
            f"mean/std; give data.mean and data.std one value per image channel"
        )
    return images


def check_mean_std(mean: Sequence[float], std: Sequence[float]) -> None:
    """Refuse a mean and std that are not one value per channel each, with std > 0."""
    if not len(mean) or len(mean) != len(std) or min(std) <= 0:
        raise UsageError(f"mean and std need one value per channel each and std > 0, got mean={mean} std={std}")


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """`(images - mean) / std` per channel, for float images (B, C, H, W) in [0, 1]."""
    check_channels(images, len(mean))
    return (images - channel_values(mean, images)) / channel_values(std, images)


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo `normalize`: normalised images back to [0, 1] pixel values (not clamped)."""
    check_channels(images, len(mean))
    return images * channel_values(std, images) + channel_values(mean, images)


class Normalize(nn.Module):
    """`normalize` and its inverse as a module, mean and std held as buffers that move with it to a device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        check_mean_std(mean, std)
        self.register_buffer("mean", channel_values(mean), persistent=False)
        self.register_buffer("std", channel_values(std), persistent=False)

    @property
    def channels(self) -> int:
        """The number of channels this normalisation expects."""
        return self.mean.shape[1]

    def forward(self, images: Tensor) -> Tensor:
        """Normalise float images (B, C, H, W) in [0, 1]."""
        return (check_channels(images, self.channels) - self.mean) / self.std

    def inverse(self, images: Tensor) -> Tensor:
        """Undo `forward`: normalised images back to [0, 1] pixel values (not clamped)."""
        return check_channels(images, self.channels) * self.std + self.mean
