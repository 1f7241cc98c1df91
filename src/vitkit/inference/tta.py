"""Test-time augmentation: the views of a batch whose logits are averaged at evaluation.

- "none": the image itself.
- "flip": the image and its mirror image (the usual horizontal-flip TTA).
- "multicrop": airbench's (Jordan 2024) six views: the image and its mirror, each also shifted by one pixel
  up-left and down-right (translations of a 1-pixel reflect-padded copy), with the unshifted pair weighted as much
  as the four shifted views together, as airbench weights them.

Every view keeps the image size, so a model trained at one resolution sees only that resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vitkit.errors import UsageError
from vitkit.inference.modes import TTA_MODES


def tta_views(images: torch.Tensor, mode: str) -> list[tuple[torch.Tensor, float]]:
    """(view, weight) pairs for `images` (B, C, H, W); weights sum to 1."""
    if mode == "none":
        return [(images, 1.0)]
    mirrored = images.flip(-1)
    if mode == "flip":
        return [(images, 0.5), (mirrored, 0.5)]
    if mode != "multicrop":
        raise UsageError(f"unknown test-time augmentation {mode!r}; use one of {TTA_MODES}")
    height, width = images.shape[-2:]
    views = [(images, 0.25), (mirrored, 0.25)]
    for base in (images, mirrored):
        padded = F.pad(base, (1, 1, 1, 1), mode="reflect")
        views.append((padded[..., :height, :width], 0.125))  # content moves down-right by one pixel
        views.append((padded[..., 2:, 2:], 0.125))  # content moves up-left by one pixel
    return views


def tta_logits(
    forward: Callable[[torch.Tensor], dict[str, torch.Tensor]], images: torch.Tensor, mode: str
) -> dict[str, torch.Tensor]:
    """The weighted mean of `forward(view)` (a dict of logits per head) over the views of `images`."""
    total: dict[str, torch.Tensor] = {}
    for view, weight in tta_views(images, mode):
        for name, logits in forward(view).items():
            total[name] = total[name] + logits.float() * weight if name in total else logits.float() * weight
    return total
