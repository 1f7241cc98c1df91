"""ConvNets: the CIFAR ResNets of He et al. 2016, BiT's ResNetV2 (Kolesnikov et al. 2020), and a fast CIFAR VGG.

`CifarResNet` is Sec. 4.2 of "Deep Residual Learning" (He et al. 2016): a 3x3 conv, three stages of n basic
blocks with 16/32/64 channels (feature maps 32/16/8 on CIFAR), global average pooling and a linear head; 6n+2
weighted layers (resnet20 ... resnet110). Shortcuts are option A by default (identity, zero-padded channels
where the width doubles: parameter-free, as the paper's CIFAR models), option B (1x1 projection + BN) on request.

`ResNetV2` is BiT (Big Transfer): bottleneck units with weight-standardised convolutions and GroupNorm(32).
`preact=True` is BiT's pre-activation unit (timm `resnetv2_*_bit`); `preact=False` is the post-activation
unit with TensorFlow 'SAME' padding that the ViT paper's hybrid uses as its stem (vit_jax `models_resnet.py`,
timm `vision_transformer_hybrid.py`). Parameter names follow timm, so timm state dicts load unchanged.

`CifarVGG` ("vgg8") is the small VGG-style network of the CIFAR-10 speed-training line (Page 2018's DAWNBench
ResNet-9, tysam-code's hlb-CIFAR10, Jordan 2024's airbench): a 2x2 convolution stem, three groups of
conv3x3 -> max-pool -> BN -> GELU -> conv3x3 -> BN -> GELU (widths 64/128/128 as airbench's 93% net), a global
max pool and a linear head whose logits are scaled by 1/9; convolutions start as identities on their first input
channels (dirac initialisation). What it leaves to the training recipe: airbench's data-whitened frozen stem,
64x learning rate on BN biases and Lookahead are not reproduced (BN here is plain, affine).

Weight standardisation and the GroupNorm epsilon follow the checkpoint's convention, as fields of the config
(`weight_std`, `norm_eps`; for a hybrid `ViTConfig.stem_weight_std` / `stem_norm_eps`), set by the format that
loads the weights: "timm" is (w - mean) / sqrt(var + 1e-8) per output filter with GroupNorm eps 1e-5 (timm's BiT
and hybrid models, vitkit's default); "jax" is the original code's (w - mean) / (std + 1e-5) (vit_jax
`models_resnet.py` StdConv) with Flax's GroupNorm eps 1e-6. On a random tiny hybrid the two give logits 7e-5
apart (relative), so an `.npz` hybrid is only within 1e-5 of the original under its own convention
(tests/test_hybrid.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.errors import UsageError
from vitkit.models.convnet_config import (
    GN_EPS,
    GN_GROUPS,
    VGG_STEM_KERNEL,
    WEIGHT_STANDARDIZATIONS,
    CifarResNetConfig,
    CifarVGGConfig,
    ResNetV2Config,
)
from vitkit.models.interface import Model


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one axis: the output has ceil(size / stride) positions."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad (B, C, H, W) as TensorFlow's 'SAME' does; at stride 2 on even sizes the extra row goes after."""
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    return F.pad(x, (left, right, top, bottom), value=value) if top or bottom or left or right else x


def standardize_weight(weight: torch.Tensor, style: str = "timm") -> torch.Tensor:
    """Weight standardisation (Qiao et al. 2019): each output filter to zero mean and unit variance.

    `style` is a key of WEIGHT_STANDARDIZATIONS: timm's (w - mean) / sqrt(var + 1e-8) or the original JAX
    (w - mean) / (std + 1e-5).
    """
    eps, on_std = WEIGHT_STANDARDIZATIONS[style]
    var, mean = torch.var_mean(weight, dim=(1, 2, 3), keepdim=True, correction=0)
    return (weight - mean) / (var.sqrt() + eps if on_std else torch.sqrt(var + eps))


class StdConv2d(nn.Conv2d):
    """A bias-free convolution of standardised weights; `same=True` pads as TensorFlow, else symmetrically."""

    def __init__(
        self, in_chans: int, out_chans: int, kernel: int, stride: int = 1, same: bool = False, style: str = "timm"
    ) -> None:
        super().__init__(in_chans, out_chans, kernel, stride, padding=0 if same else kernel // 2, bias=False)
        self.same, self.style = same, style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve with the standardised kernel."""
        if self.same:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, standardize_weight(self.weight, self.style), None, self.stride, self.padding)


def group_norm(channels: int, eps: float = GN_EPS) -> nn.GroupNorm:
    """GroupNorm with BiT's 32 groups."""
    return nn.GroupNorm(GN_GROUPS, channels, eps=eps)


def init_convnet(model: nn.Module) -> None:
    """He (kaiming-normal, fan-out) convolutions, unit-scale norms with zero shift, PyTorch-default linears."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            module.reset_parameters()


class ConvNet(Model):
    """What the ConvNet families share: pooled features and a linear head; no blocks, patches or attention."""

    config: CifarResNetConfig | ResNetV2Config | CifarVGGConfig
    head: nn.Module

    def make_head(self) -> nn.Module:
        """A linear classifier on the pooled features (no parameters when num_classes is 0)."""
        classes = self.config.num_classes
        return nn.Linear(self.config.num_features, classes) if classes > 0 else nn.Identity()

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the last feature map (B, F, H / stride, W / stride).

        The convolutions run on channels-last activations: oneDNN and cuDNN convolve NHWC faster (measured on
        a 2-core Xeon, training at batch 256: vgg8 1.8x in bf16 and 1.5x in fp32, resnet20 1.45x / 1.2x).
        The weights keep the standard layout, so checkpoints are unchanged.
        """
        return self.feature_map(images.contiguous(memory_format=torch.channels_last))

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The family's layers: (B, C, H, W) -> (B, F, H / stride, W / stride)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W), normalised, any size -> logits (B, num_classes)."""
        if images.ndim != 4 or images.shape[1] != self.config.in_chans:
            raise UsageError(
                f"expected images of shape (batch, {self.config.in_chans}, height, width), got {tuple(images.shape)}"
            )
        return self.forward_head(self.forward_features(images))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The feature map (B, F, h, w) -> logits (B, num_classes), or with `pre_logits` the pooled (B, F)."""
        pooled = self.pool(features)
        return pooled if pre_logits else self.head(pooled)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F, h, w) -> (B, F): global average pooling."""
        return features.mean(dim=(2, 3))

    def reset_head(self) -> None:
        """Zero the head (fine-tuning, as BiT and the ViT paper) or give it PyTorch's default init."""
        if isinstance(self.head, nn.Linear):
            if self.config.zero_init_head:
                nn.init.zeros_(self.head.weight)
                nn.init.zeros_(self.head.bias)
            else:
                self.head.reset_parameters()


# --- He et al. 2016, CIFAR ------------------------------------------------------------------------------


class ConvNormAct(nn.Sequential):
    """conv3x3 -> BN -> ReLU, the CIFAR ResNet's first layer."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_chans)
        self.act = nn.ReLU()


class Projection(nn.Module):
    """Option-B shortcut: 1x1 convolution (strided) and BatchNorm."""

    def __init__(self, in_chans: int, out_chans: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 1, stride, bias=False)
        self.norm = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The projected shortcut."""
        return self.norm(self.conv(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BN, added to the shortcut, then ReLU (He et al. 2016, Fig. 2)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_chans)
        reshapes = stride != 1 or in_chans != out_chans
        self.downsample = Projection(in_chans, out_chans, stride) if reshapes and shortcut == "B" else None
        self.stride, self.extra_chans = stride, out_chans - in_chans

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Identity; where the shape changes, option A subsamples and zero-pads channels, option B projects."""
        if self.downsample is not None:
            return self.downsample(x)
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_chans)) if self.extra_chans else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(F(x) + shortcut(x))."""
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class Stage(nn.Module):
    """A sequence of residual units; the first one strides and changes the width."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the units in order."""
        return self.blocks(x)


class CifarResNet(ConvNet):
    """He et al. 2016 Sec. 4.2: conv3x3(16) -> stages of basic blocks (16, 32, 64 channels) -> pool -> linear."""

    def __init__(self, config: CifarResNetConfig) -> None:
        super().__init__()
        self.config = config
        self.class_names: list[str] | None = None  # labels of the head's outputs, set by checkpoint loading
        self.stem = ConvNormAct(config.in_chans, config.width)
        stages, chans = [], config.width
        for index, depth in enumerate(config.layers):
            out, stride = config.width * 2**index, 1 if index == 0 else 2
            blocks = [
                BasicBlock(chans if i == 0 else out, out, stride if i == 0 else 1, config.shortcut)
                for i in range(depth)
            ]
            stages.append(Stage(blocks))
            chans = out
        self.stages = nn.Sequential(*stages)
        self.head = self.make_head()
        init_convnet(self)
        self.reset_head()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, width * 2^(stages-1), H / stride, W / stride)."""
        return self.stages(self.stem(images))


# --- the fast CIFAR VGG (airbench line) ------------------------------------------------------------------


class ConvGroup(nn.Module):
    """conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU (pooling before the norm, as airbench)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Halve the map, change the width."""
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class CifarVGG(ConvNet):
    """2x2 conv stem + GELU -> conv groups -> global max pool -> linear head x logit_scale."""

    def __init__(self, config: CifarVGGConfig) -> None:
        super().__init__()
        self.config = config
        self.class_names: list[str] | None = None  # labels of the head's outputs, set by checkpoint loading
        self.stem = nn.Conv2d(config.in_chans, config.stem_width, VGG_STEM_KERNEL, bias=True)
        chans = [config.stem_width, *config.widths]
        self.groups = nn.Sequential(*(ConvGroup(i, o) for i, o in zip(chans[:-1], chans[1:], strict=True)))
        self.head = self.make_head()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default init, then each 3x3 convolution's first filters set to the identity (airbench)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                module.reset_parameters()
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                # An implicit residual: the group starts by passing its input through.
                nn.init.dirac_(module.weight.data[: module.in_channels])
        self.reset_head()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, widths[-1], ~H / 2^groups, ~W / 2^groups)."""
        return self.groups(F.gelu(self.stem(images)))

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Global max pooling (airbench's final 3x3 max pool over the 3x3 map)."""
        return features.amax(dim=(2, 3))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The map -> logits scaled by `logit_scale` (airbench), or with `pre_logits` the max-pooled features."""
        out = super().forward_head(features, pre_logits)
        return out if pre_logits else out * self.config.logit_scale


# --- BiT ResNetV2 and the ViT hybrid's stem --------------------------------------------------------------


class RootBlock(nn.Module):
    """The 7x7/2 root convolution and 3x3/2 max pool (stride 4 in all); GroupNorm + ReLU in the hybrid."""

    def __init__(
        self, in_chans: int, width: int, preact: bool, weight_std: str = "timm", norm_eps: float = GN_EPS
    ) -> None:
        super().__init__()
        self.conv = StdConv2d(in_chans, width, 7, stride=2, same=not preact, style=weight_std)
        self.norm = None if preact else group_norm(width, norm_eps)
        self.preact = preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, width, H/4, W/4)."""
        x = self.conv(x)
        if self.preact:
            # BiT pads the pre-activation map with zeros before pooling (timm's 'fixed' stem).
            return F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)
        x = F.relu(self.norm(x))
        return F.max_pool2d(pad_same(x, 3, 2, value=-math.inf), 3, 2)  # Flax max_pool padding='SAME'


class Downsample(nn.Module):
    """The projection shortcut of a stage's first unit: strided 1x1 StdConv (+ GroupNorm when post-activation)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        stride: int,
        preact: bool,
        weight_std: str = "timm",
        norm_eps: float = GN_EPS,
    ) -> None:
        super().__init__()
        self.conv = StdConv2d(in_chans, out_chans, 1, stride, same=not preact, style=weight_std)
        self.norm = None if preact else group_norm(out_chans, norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The projected shortcut."""
        x = self.conv(x)
        return x if self.norm is None else self.norm(x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 StdConvs with GroupNorm, in BiT's pre-activation or the hybrid's post order."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        stride: int,
        preact: bool,
        project: bool,
        weight_std: str = "timm",
        norm_eps: float = GN_EPS,
    ) -> None:
        super().__init__()
        style, eps = weight_std, norm_eps
        mid, same = out_chans // 4, not preact
        self.downsample = Downsample(in_chans, out_chans, stride, preact, style, eps) if project else None
        self.norm1 = group_norm(in_chans if preact else mid, eps)
        self.conv1 = StdConv2d(in_chans, mid, 1, same=same, style=style)
        self.norm2 = group_norm(mid, eps)
        self.conv2 = StdConv2d(mid, mid, 3, stride, same=same, style=style)
        self.norm3 = group_norm(mid if preact else out_chans, eps)
        self.conv3 = StdConv2d(mid, out_chans, 1, same=same, style=style)
        self.preact = preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One unit; BiT: x + F(act(x)); hybrid: act(F(x) + shortcut(x)) (vit_jax ResidualUnit)."""
        if self.preact:
            activated = F.relu(self.norm1(x))
            shortcut = x if self.downsample is None else self.downsample(activated)
            x = self.conv2(F.relu(self.norm2(self.conv1(activated))))
            return self.conv3(F.relu(self.norm3(x))) + shortcut
        shortcut = x if self.downsample is None else self.downsample(x)
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        return F.relu(self.norm3(self.conv3(x)) + shortcut)


class ResNetV2(ConvNet):
    """BiT's ResNetV2: root block -> bottleneck stages (256, 512, 1024, 2048 x width) -> [GN, ReLU] -> pool -> linear.

    With `preact=False` and `num_classes=0` it is the ViT hybrid's stem (`forward_features` gives the map).
    """

    def __init__(self, config: ResNetV2Config) -> None:
        super().__init__()
        self.config = config
        self.class_names: list[str] | None = None  # labels of the head's outputs, set by checkpoint loading
        conventions = {"weight_std": config.weight_std, "norm_eps": config.norm_eps}
        self.stem = RootBlock(config.in_chans, config.stem_width, config.preact, **conventions)
        stages, chans = [], config.stem_width
        for index, depth in enumerate(config.layers):
            out, stride = 4 * config.stem_width * 2**index, 1 if index == 0 else 2
            units = [
                Bottleneck(chans if i == 0 else out, out, stride if i == 0 else 1, config.preact, i == 0, **conventions)
                for i in range(depth)
            ]
            stages.append(Stage(units))
            chans = out
        self.stages = nn.Sequential(*stages)
        # Pre-activation units leave the last sum un-normalised: BiT closes with GroupNorm + ReLU.
        self.norm = group_norm(chans, config.norm_eps) if config.preact else None
        self.head = self.make_head()
        init_convnet(self)
        if not config.preact:
            for stage in self.stages:
                for unit in stage.blocks:
                    nn.init.zeros_(unit.norm3.weight)  # each unit starts as the identity (vit_jax gn3 init)
        self.reset_head()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 4 * stem width * 2^(stages-1), H / stride, W / stride)."""
        x = self.stages(self.stem(images))
        return x if self.norm is None else F.relu(self.norm(x))
