"""xresnet: the ResNet of the Imagenette leaderboard (He et al. 2019, "Bag of Tricks", ResNet-D; fastai's xresnet).

Three tweaks to the ResNet of He et al. 2016, each cheap, each worth accuracy when trained from scratch:

- the stem is three 3x3 convolutions (32, 32, 64 channels; the first one strided) instead of one 7x7
  convolution (ResNet-C, Sec. 4.2 of the paper), then a 3x3 / 2 max pool: stride 4, as the original;
- a shortcut that downsamples average-pools 2x2 before its 1x1 convolution, so that it reads every input
  position instead of one in four (ResNet-D);
- each block's last BatchNorm starts with gamma 0, so that every residual block starts as the identity
  (Goyal et al. 2017; Sec. 3.1 of the paper).

Optional, from the leaderboard's entries: Mish (Misra 2019) instead of ReLU everywhere.

Depths (units per stage): 10 (1, 1, 1, 1), 18 (2, 2, 2, 2), 34 (3, 4, 6, 3) with basic blocks; 26 (2, 2, 2, 2),
50 (3, 4, 6, 3), 101 (3, 4, 23, 3) with bottlenecks (x4 expansion). Stage widths 64/128/256/512 x `width_factor`.
Names: "xresnet18", "xresnet50", with a width "xresnet18x0.5", with Mish "xresnet18_mish" (registry.py).
"""

from __future__ import annotations

import torch
from torch import nn

from vitkit.models.convnet_config import EXPANSION, STEM_WIDTHS, XResNetConfig
from vitkit.models.resnet import ConvNet, init_convnet


def activation(name: str) -> nn.Module:
    """ReLU or Mish, in place where that is safe."""
    return nn.Mish(inplace=True) if name == "mish" else nn.ReLU(inplace=True)


def conv_bn(in_chans: int, out_chans: int, kernel: int = 3, stride: int = 1, act: str | None = "relu") -> nn.Sequential:
    """conv (no bias) -> BN (-> activation): the unit every xresnet layer is made of."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_chans, out_chans, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_chans),
    ]
    if act is not None:
        layers.append(activation(act))
    return nn.Sequential(*layers)


class XStem(nn.Sequential):
    """ResNet-C's stem: conv 3x3 / 2, conv 3x3, conv 3x3 (BN and activation after each), then max-pool 3x3 / 2.

    `pool=False` leaves out the max pool (stride 2), for ViT tokenizers that downsample further themselves.
    """

    def __init__(self, in_chans: int, act: str = "relu", pool: bool = True, widths: tuple[int, ...] = STEM_WIDTHS):
        chans = [in_chans, *widths]
        layers = [conv_bn(chans[i], chans[i + 1], 3, 2 if i == 0 else 1, act) for i in range(len(widths))]
        if pool:
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        super().__init__(*layers)
        self.num_features = widths[-1]


class XBlock(nn.Module):
    """A residual block (basic: 3x3, 3x3; bottleneck: 1x1, 3x3, 1x1) whose last BN starts at zero, plus the
    ResNet-D shortcut: identity, or [avg-pool 2x2 where it strides] -> [conv 1x1 + BN where the width changes]."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, bottleneck: bool, act: str) -> None:
        super().__init__()
        if bottleneck:
            mid = out_chans // EXPANSION
            self.convs = nn.Sequential(
                conv_bn(in_chans, mid, 1, act=act),
                conv_bn(mid, mid, 3, stride, act=act),
                conv_bn(mid, out_chans, 1, act=None),
            )
        else:
            self.convs = nn.Sequential(
                conv_bn(in_chans, out_chans, 3, stride, act=act), conv_bn(out_chans, out_chans, 3, act=None)
            )
        shortcut: list[nn.Module] = []
        if stride > 1:
            shortcut.append(nn.AvgPool2d(stride, ceil_mode=True))
        if in_chans != out_chans:
            shortcut.append(conv_bn(in_chans, out_chans, 1, act=None))
        self.shortcut = nn.Sequential(*shortcut)
        self.act = activation(act)

    def last_norm(self) -> nn.BatchNorm2d:
        """The BN closing the residual branch (zero gamma at init)."""
        return self.convs[-1][1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """act(F(x) + shortcut(x))."""
        return self.act(self.convs(x) + self.shortcut(x))


class XResNet(ConvNet):
    """xresnet: XStem -> stages of XBlocks (stride 1, 2, 2, 2) -> global average pool -> linear head."""

    def __init__(self, config: XResNetConfig) -> None:
        super().__init__()
        self.config = config
        self.class_names: list[str] | None = None  # labels of the head's outputs, set by checkpoint loading
        self.stem = XStem(config.in_chans, config.act)
        stages, chans = [], self.stem.num_features
        for index, (units, out) in enumerate(zip(config.layers, config.widths, strict=True)):
            stride = 1 if index == 0 else 2
            blocks = [
                XBlock(chans if i == 0 else out, out, stride if i == 0 else 1, config.bottleneck, config.act)
                for i in range(units)
            ]
            stages.append(nn.Sequential(*blocks))
            chans = out
        self.stages = nn.Sequential(*stages)
        self.head = self.make_head()
        init_convnet(self)
        for stage in self.stages:
            for block in stage:
                nn.init.zeros_(block.last_norm().weight)  # every block starts as the identity (Bag of Tricks 3.1)
        self.reset_head()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, widths[-1], H / 32, W / 32) with four stages."""
        return self.stages(self.stem(images))
