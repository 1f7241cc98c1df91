"""Attention maps and attention distance (paper Sec. 4.5, Fig. 6, 7 right, 11 and 13).

The math functions take the per-layer attention probabilities, a list of (B, heads, T, T) tensors as
`VisionTransformer.forward_with_details` returns them, so they can be tested on attention of known form;
the model-level wrappers run the model and call them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vitkit.errors import UsageError
from vitkit.models import VisionTransformer


def check_attentions(attentions: Sequence[torch.Tensor], grid: tuple[int, int], num_prefix: int) -> None:
    """Raise a UsageError unless every layer's attention is (B, heads, T, T) with T = prefix + grid tokens."""
    if len(attentions) == 0:
        raise UsageError("no attention probabilities given: call forward_with_details(images, attentions=True)")
    tokens = num_prefix + grid[0] * grid[1]
    for layer, attn in enumerate(attentions):
        if attn.ndim != 4 or attn.shape[-1] != tokens or attn.shape[-2] != tokens:
            raise UsageError(
                f"layer {layer} attention has shape {tuple(attn.shape)}; expected (batch, heads, {tokens}, {tokens}) "
                f"for {num_prefix} prefix token(s) and a {grid[0]}x{grid[1]} patch grid"
            )


def rollout_from_attentions(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): (B, T, T) attention flow from each token to each input token.

    Per layer: average the heads, add the identity for the residual connection, renormalise the rows;
    then multiply the layers, first layer rightmost. Every row of the result sums to 1.
    """
    if len(attentions) == 0:
        raise UsageError("attention rollout needs at least one layer of attention probabilities")
    flow = None
    for attn in attentions:
        fused = attn.double().mean(dim=1)
        fused = fused + torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        fused = fused / fused.sum(dim=-1, keepdim=True)
        flow = fused if flow is None else fused @ flow
    return flow.float()


def attention_from_output(matrix: torch.Tensor, num_prefix: int, token: int = 0) -> torch.Tensor:
    """The rows that make the image representation, over the patch keys: (..., T, T) -> (..., N).

    With a class token that is the class token's row (`token` 1: DeiT's distillation token's); with global
    average pooling the representation is the mean of all tokens, so it is the mean of all rows.
    """
    if not 0 <= token < max(num_prefix, 1):
        raise UsageError(f"token {token} is not a prefix token: the model has {num_prefix} (class, distillation)")
    rows = matrix[..., token, :] if num_prefix > 0 else matrix.mean(dim=-2)
    return rows[..., num_prefix:]


def rollout_map(rollout: torch.Tensor, grid: tuple[int, int], num_prefix: int, token: int = 0) -> torch.Tensor:
    """(B, T, T) rollout -> (B, gh, gw): how much of the image representation (of prefix `token`) flows from each
    patch."""
    return attention_from_output(rollout, num_prefix, token).reshape(rollout.shape[0], *grid)


def head_maps(attention: torch.Tensor, grid: tuple[int, int], num_prefix: int, token: int = 0) -> torch.Tensor:
    """One layer's (B, heads, T, T) attention -> (B, heads, gh, gw) per-head attention of the representation
    (of prefix `token`)."""
    batch, heads = attention.shape[:2]
    return attention_from_output(attention, num_prefix, token).reshape(batch, heads, *grid)


def patch_distances(grid: tuple[int, int], patch_size: tuple[int, int]) -> torch.Tensor:
    """(N, N) Euclidean distances in pixels between the centres of the patches of a grid (row-major)."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten() * patch_size[0], cols.flatten() * patch_size[1]], dim=1).double()
    return torch.cdist(centres, centres)


def mean_distance_from_attentions(
    attentions: Sequence[torch.Tensor], grid: tuple[int, int], patch_size: tuple[int, int], num_prefix: int
) -> torch.Tensor:
    """(layers, heads) attention-weighted mean query-key distance in pixels, averaged over queries and images.

    Only patch-to-patch attention counts: prefix (class-token) queries and keys are dropped and each query's
    attention is renormalised over the patch keys, so a head that looks mostly at the class token is
    measured by where it looks in the image (the class token has no position).
    """
    check_attentions(attentions, grid, num_prefix)
    distances = patch_distances(grid, patch_size).to(attentions[0].device)
    per_layer = []
    for attn in attentions:
        patch = attn[:, :, num_prefix:, num_prefix:].double()
        patch = patch / patch.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        per_layer.append((patch * distances).sum(dim=-1).mean(dim=(0, 2)))
    return torch.stack(per_layer).float()


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize (..., gh, gw) patch maps to (..., H, W) pixels for overlaying on the image."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)


@torch.no_grad()
def model_attentions(model: VisionTransformer, images: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """Every layer's attention probabilities (explicit softmax path) and the patch grid, in eval mode."""
    model.eval()
    output = model.forward_with_details(images, attentions=True)
    return output.attentions, output.grid


def attention_rollout(model: VisionTransformer, images: torch.Tensor) -> np.ndarray:
    """(B, gh, gw) attention-rollout map of the class token (or of the token mean for GAP models)."""
    attentions, grid = model_attentions(model, images)
    check_attentions(attentions, grid, model.num_prefix_tokens)
    return rollout_map(rollout_from_attentions(attentions), grid, model.num_prefix_tokens).cpu().numpy()


def last_layer_head_maps(model: VisionTransformer, images: torch.Tensor) -> np.ndarray:
    """(B, heads, gh, gw) last-layer attention of the class token (or of the token mean for GAP models)."""
    attentions, grid = model_attentions(model, images)
    check_attentions(attentions, grid, model.num_prefix_tokens)
    return head_maps(attentions[-1], grid, model.num_prefix_tokens).cpu().numpy()


def mean_attention_distance(model: VisionTransformer, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """(layers, heads) mean attention distance in input pixels, averaged over `images` (see the math function)."""
    if images.shape[0] == 0:
        raise UsageError("mean attention distance needs at least one image")
    total, count = None, 0
    for chunk in images.split(batch_size):
        attentions, grid = model_attentions(model, chunk)
        mean = mean_distance_from_attentions(attentions, grid, model.config.patch_size, model.num_prefix_tokens)
        total = mean * len(chunk) if total is None else total + mean * len(chunk)
        count += len(chunk)
    return (total / count).cpu().numpy()
