"""Convolutional tokenizers for small images: the hybrid's CNN feature map (paper Sec. 3.1) from a few convolutions.

Two published stems, each a stack whose total stride is the ViT's patch size, named in `ViTConfig.stem`:

- "cct<n>": Compact Convolutional Transformers' tokenizer (Hassani et al. 2021, Sec. 3.2): n times
  conv 3x3 (stride 1, no bias) -> ReLU -> max-pool 3x3 / 2; 64 channels in between and D at the end, so the
  map is already the token width (no projection). Total stride 2^n: "cct2+Ti/4" turns a 32x32 image into
  8x8 tokens, as CCT-7/3x2 does.
- "conv<n>": the early-convolution stem of Xiao et al. 2021 ("Early convolutions help transformers see
  better", Sec. 3): n stride-2 3x3 convolutions with BatchNorm and ReLU, channels doubling up to D in the last
  one, then a 1x1 convolution to D (the hybrid's projection). Total stride 2^n: "conv2+Ti/4".

- "xres<n>" (n >= 2): the xresnet stem (He et al. 2019, ResNet-C; `xresnet.py`) as a ViT tokenizer: conv 3x3 / 2,
  conv 3x3, conv 3x3 (32, 32, 64 channels, BN and ReLU after each), max-pool 3x3 / 2 (stride 4), then n - 2
  stride-2 conv 3x3 + BN + ReLU layers doubling the width (128, 256, ...), then the 1x1 projection to D.
  Total stride 2^n: "xres4+Ti/16" gives 128 px photos 8x8 tokens.

Any of them gives `(B, channels, H / 2^n, W / 2^n)`; `HybridEmbedding` turns it into tokens as for the ResNet stems.
Both compute in channels-last layout, as the ConvNets do: a CCT-2 tokenizer in front of a 192-wide ViT trained
1.25x faster per image in bf16 on a 2-core Xeon with AMX (166 -> 208 images/s, batch 128, 1 thread).
"""

from __future__ import annotations

import torch
from torch import nn

from vitkit.models.resnet import init_convnet
from vitkit.models.stems import tokenizer_layers
from vitkit.models.xresnet import XStem, conv_bn

CCT_WIDTH = 64  # CCT's channels between its convolutions (`in_planes`)


class ConvTokenizer(nn.Module):
    """What the tokenizers share: `stages`, run in channels-last layout; `num_features`, `needs_projection`."""

    stages: nn.Sequential

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_features, H / 2^layers, W / 2^layers), channels-last (the tokens are then a view)."""
        return self.stages(images.contiguous(memory_format=torch.channels_last))


class CCTTokenizer(ConvTokenizer):
    """CCT's tokenizer: `layers` x [conv k x k -> ReLU -> max-pool 3/2], ending with `dim` channels."""

    def __init__(self, in_chans: int, dim: int, layers: int, kernel: int = 3) -> None:
        super().__init__()
        widths = [in_chans] + [CCT_WIDTH] * (layers - 1) + [dim]
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(widths[i], widths[i + 1], kernel, padding=kernel // 2, bias=False),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, stride=2, padding=1),
                )
                for i in range(layers)
            )
        )
        self.num_features, self.needs_projection = dim, False
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)  # as CCT's release


class EarlyConvStem(ConvTokenizer):
    """Xiao et al.'s stem: `layers` x [conv 3x3 / 2 -> BN -> ReLU], widths doubling to `dim` (the 1x1 comes after)."""

    def __init__(self, in_chans: int, dim: int, layers: int) -> None:
        super().__init__()
        widths = [in_chans] + [max(dim // 2 ** (layers - 1 - i), 8) for i in range(layers)]
        self.stages = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(widths[i + 1]),
                    nn.ReLU(inplace=True),
                )
                for i in range(layers)
            )
        )
        self.num_features, self.needs_projection = widths[-1], True
        init_convnet(self)  # He fan-out convolutions, unit BatchNorms


class XResTokenizer(ConvTokenizer):
    """The xresnet stem (stride 4), then `layers - 2` stride-2 conv-BN-ReLU layers doubling the width."""

    def __init__(self, in_chans: int, layers: int) -> None:
        super().__init__()
        stem = XStem(in_chans)
        widths = [stem.num_features * 2**i for i in range(layers - 1)]
        downs = [conv_bn(widths[i], widths[i + 1], 3, 2) for i in range(layers - 2)]
        self.stages = nn.Sequential(stem, *downs)
        self.num_features, self.needs_projection = widths[-1], True
        init_convnet(self)  # He fan-out convolutions, unit BatchNorms


def build_tokenizer(stem: str, patch_size: tuple[int, int], in_chans: int, dim: int) -> nn.Module:
    """The tokenizer a stem name describes, for a ViT of width `dim` and patch size `patch_size`."""
    layers = tokenizer_layers(stem, patch_size)
    if stem.startswith("cct"):
        return CCTTokenizer(in_chans, dim, layers)
    if stem.startswith("xres"):
        return XResTokenizer(in_chans, layers)
    return EarlyConvStem(in_chans, dim, layers)
