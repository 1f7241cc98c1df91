"""The hybrid's patch embedding (paper Sec. 3.1 "Hybrid Architecture", Appendix B): patches of a CNN feature map.

"The patch embedding projection E is applied to patches extracted from a CNN feature map", with patches of
1x1 pixels: the CNN's total stride is the effective patch size, so `ViTConfig.patch_size` holds it and grid
sizes, divisibility checks and position-embedding resampling work as for the plain ViT.

`ViTConfig.stem` names the CNN:
- "R50" (also R26, R101, R152, with an optional width "R50x2"): the ResNetV2 of the JAX hybrid (post-activation
  units, GroupNorm, weight standardisation). At stride 32 it keeps all 4 stages; for stride 16 "we remove
  stage 4, place the same number of layers in stage 3 (keeping the total number of layers)" (App. B), so
  R50+B/16 has stages (3, 4, 9). Strides 8 and 4 fold the same way into 2 and 1 stages.
- "X50" (also X10, X18, X26, X34, X101; width "X50x0.5", Mish "X50_mish"): the xresnet of the Imagenette
  leaderboard (`xresnet.py`: three-convolution stem, ResNet-D shortcuts, BatchNorm), folded as R50: X50+S/16 keeps
  stages (3, 4, 9) and feeds the transformer an 8x8 grid at 128 px. For photos from scratch at a small size.
- "C20" (also C32, C44, C56, C110; width "C20x2"): the CIFAR ResNet of He et al. 2016, for 32x32 images. Its
  stages have stride 1, 2, 2, so strides 1, 2 and 4 keep 1, 2 and 3 stages, folded the same way:
  "C20+Mini/4" has stages (3, 3, 3) and feeds an 8x8 grid of 64-channel features to ViT-Mini.
- "cct2", "conv2", "xres4" (any layer count n, total stride 2^n): the convolutional tokenizers for small images of
  `tokenizers.py` (Compact Convolutional Transformers; Xiao et al.'s early convolutions).
"""

from __future__ import annotations

import torch
from torch import nn

from vitkit.errors import UsageError
from vitkit.models.config import ViTConfig, nearest_multiples
from vitkit.models.registry import build_model
from vitkit.models.stems import is_tokenizer, stem_config
from vitkit.models.tokenizers import build_tokenizer


class HybridEmbedding(nn.Module):
    """x_p E of eq. (1) on a CNN feature map: the ConvNet, then a 1x1 convolution to the width D."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if config.stem is None:
            raise UsageError("a hybrid embedding needs ViTConfig.stem (e.g. 'R50')")
        if is_tokenizer(config.stem):
            self.backbone = build_tokenizer(config.stem, config.patch_size, config.in_chans, config.hidden_dim)
            features, project = self.backbone.num_features, self.backbone.needs_projection
        else:
            stem = stem_config(
                config.stem, config.patch_size, config.in_chans, config.stem_weight_std, config.stem_norm_eps
            )
            self.backbone = build_model(stem)  # the headless ResNetV2, xresnet or CIFAR ResNet
            features, project = stem.num_features, True
        # CCT's last convolution already has the token width: no projection after it.
        self.proj = nn.Conv2d(features, config.hidden_dim, kernel_size=1) if project else nn.Identity()
        self.stride, self.in_chans, self.name = config.patch_size[0], config.in_chans, config.stem

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) -> (B, N, D) feature-map tokens and the (H/stride, W/stride) grid they came from."""
        if images.ndim != 4:
            raise UsageError(f"expected images of shape (batch, channels, height, width), got {tuple(images.shape)}")
        if images.shape[1] != self.in_chans:
            raise UsageError(f"expected {self.in_chans} image channels, got {images.shape[1]}")
        for size in images.shape[2:]:
            if size % self.stride:
                valid = " or ".join(str(s) for s in nearest_multiples(size, self.stride))
                raise UsageError(
                    f"image size {size} is not divisible by the total stride {self.stride} of the {self.name} stem; "
                    f"use an image size of {valid}"
                )
        tokens = self.proj(self.backbone.forward_features(images))
        # (B, D, h, w) channels-last -> (B, h*w, D): a view, no copy (row-major tokens, as flatten(2) orders them).
        return tokens.permute(0, 2, 3, 1).flatten(1, 2), (tokens.shape[2], tokens.shape[3])
