"""The configs of vitkit's ConvNet families (models/resnet.py, models/xresnet.py), without their torch modules.

A recipe's model section is checked against its family's config, and `vitkit train --help` lists the fields,
before (or without) any model is built; the networks themselves import these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from vitkit.errors import UsageError
from vitkit.models.config import ConfigDict, to_pair

# Weight standardisation: name -> (epsilon, whether it is added to the std rather than to the variance).
WEIGHT_STANDARDIZATIONS = {"timm": (1e-8, False), "jax": (1e-5, True)}
GN_EPS = 1e-5  # timm's GroupNormAct (torch default); the JAX originals use Flax's 1e-6
JAX_GN_EPS = 1e-6
GN_GROUPS = 32
SHORTCUTS = ("A", "B")

# Bottleneck units per stage of BiT's ResNetV2 at each standard depth (BiT Sec. 3; R26 as in timm/big_vision).
RESNETV2_LAYERS: dict[int, tuple[int, ...]] = {
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # He et al. 2016, Table 6 (6n+2 layers)
VGG_STEM_KERNEL = 2  # airbench: a 2x2 patch convolution without padding (32 -> 31 px)


@dataclass
class CifarResNetConfig(ConfigDict):
    """He et al. 2016 Sec. 4.2: a CIFAR ResNet with `layers[i]` basic blocks in stage i."""

    label: ClassVar[str] = "CIFAR ResNet"
    layers: tuple[int, ...] = (3, 3, 3)  # n per stage: resnet20 (n=3) ... resnet110 (n=18)
    width: int = 16  # channels of stage 1, doubled in each later stage (16/32/64 in the paper)
    shortcut: str = "A"  # "A": identity + zero-padded channels (the paper's CIFAR choice); "B": 1x1 projection
    num_classes: int = 10
    img_size: tuple[int, int] = (32, 32)  # any size works (global pooling); recorded for training and inference
    in_chans: int = 3
    zero_init_head: bool = False  # trained from scratch: the default (kaiming-uniform) head
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        self.img_size = to_pair(self.img_size, "img_size")
        if not self.layers or min(self.layers) < 1:
            raise UsageError(f"layers must list at least one stage of at least one block, got {self.layers}")
        if self.width < 1:
            raise UsageError(f"width must be positive, got {self.width}")
        if self.shortcut not in SHORTCUTS:
            raise UsageError(f"shortcut must be one of {SHORTCUTS} (He et al. 2016 options), got {self.shortcut!r}")

    @property
    def depth(self) -> int:
        """Weighted layers: two per basic block, the first conv and the head (6n+2 for three stages of n)."""
        return 2 * sum(self.layers) + 2

    @property
    def total_stride(self) -> int:
        """Downsampling of the feature map: stage 1 keeps the resolution, each later stage halves it."""
        return 2 ** (len(self.layers) - 1)

    @property
    def num_features(self) -> int:
        """Channels of the last stage."""
        return self.width * 2 ** (len(self.layers) - 1)


@dataclass
class ResNetV2Config(ConfigDict):
    """BiT's ResNetV2 (Kolesnikov et al. 2020): stem, bottleneck stages of `layers[i]` units, width x `width_factor`."""

    label: ClassVar[str] = "ResNetV2"
    layers: tuple[int, ...] = (3, 4, 6, 3)  # ResNet-50
    width_factor: float = 1.0  # BiT's x1, x2, x3, x4; multiples of 0.5 keep GroupNorm(32) whole
    preact: bool = True  # BiT pre-activation units; False: the ViT hybrid's post-activation units, 'SAME' padding
    num_classes: int = 1000
    img_size: tuple[int, int] = (224, 224)
    in_chans: int = 3
    zero_init_head: bool = True  # BiT starts every head at zero (Kolesnikov et al. 2020, Sec. 3.3)
    weight_std: str = "timm"  # a key of WEIGHT_STANDARDIZATIONS: timm | jax (the original code), set by the format
    norm_eps: float = GN_EPS  # GroupNorm epsilon: timm 1e-5, Flax (the JAX releases) 1e-6
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        self.img_size = to_pair(self.img_size, "img_size")
        if self.weight_std not in WEIGHT_STANDARDIZATIONS:
            raise UsageError(f"weight_std must be one of {tuple(WEIGHT_STANDARDIZATIONS)}, got {self.weight_std!r}")
        if not self.layers or min(self.layers) < 1:
            raise UsageError(f"layers must list at least one stage of at least one unit, got {self.layers}")
        stem = 64 * self.width_factor
        if stem != int(stem) or int(stem) % GN_GROUPS:
            raise UsageError(
                f"width_factor {self.width_factor} gives {stem:g} stem channels, but GroupNorm({GN_GROUPS}) needs a "
                f"multiple of {GN_GROUPS}: use a multiple of 0.5 (BiT uses 1, 2, 3, 4)"
            )

    @property
    def depth(self) -> int:
        """Weighted layers: three per bottleneck unit, the root convolution and the head (R50 = 3 x 16 + 2)."""
        return 3 * sum(self.layers) + 2

    @property
    def stem_width(self) -> int:
        """Channels of the 7x7 root convolution (64 x width factor)."""
        return int(64 * self.width_factor)

    @property
    def total_stride(self) -> int:
        """Downsampling of the feature map: 4 in the root, then 2 in every stage after the first."""
        return 4 * 2 ** (len(self.layers) - 1)

    @property
    def num_features(self) -> int:
        """Channels of the last stage (4 x its bottleneck width)."""
        return 4 * self.stem_width * 2 ** (len(self.layers) - 1)


@dataclass
class CifarVGGConfig(ConfigDict):
    """A fast CIFAR VGG: a 2x2 conv stem, then one conv-pool-conv group per entry of `widths`, max pool, linear."""

    label: ClassVar[str] = "CIFAR VGG"
    widths: tuple[int, ...] = (64, 128, 128)  # airbench's 93% network; (64, 256, 256) is its 94% one
    stem_width: int = 24  # airbench: 2 x 3 x 2 x 2, the size of a whitening basis of 2x2 RGB patches (and its negative)
    logit_scale: float = 1 / 9  # airbench scales the logits down (a lower-temperature start)
    num_classes: int = 10
    img_size: tuple[int, int] = (32, 32)
    in_chans: int = 3
    zero_init_head: bool = False
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        self.img_size = to_pair(self.img_size, "img_size")
        if not self.widths or min(self.widths) < 1 or self.stem_width < 1:
            raise UsageError(f"widths must list at least one positive width, got {self.widths}, stem {self.stem_width}")
        side = min(self.img_size) - VGG_STEM_KERNEL + 1
        if side < 2 ** len(self.widths):
            raise UsageError(
                f"img_size {self.img_size} is too small for {len(self.widths)} max-pooling groups (each halves the "
                f"map); use at least {2 ** len(self.widths) + VGG_STEM_KERNEL - 1} px or fewer widths"
            )

    @property
    def depth(self) -> int:
        """Weighted layers: the stem, two convolutions per group and the head (8 for three groups)."""
        return 2 * len(self.widths) + 2

    @property
    def total_stride(self) -> int:
        """Downsampling of the feature map: each group max-pools by 2."""
        return 2 ** len(self.widths)

    @property
    def num_features(self) -> int:
        """Channels of the last group."""
        return self.widths[-1]


# depth -> (units per stage, bottleneck)
XRESNET_LAYERS: dict[int, tuple[tuple[int, ...], bool]] = {
    10: ((1, 1, 1, 1), False),
    18: ((2, 2, 2, 2), False),
    26: ((2, 2, 2, 2), True),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
}
XRESNET_ACTS = ("relu", "mish")
STEM_WIDTHS = (32, 32, 64)  # the three stem convolutions (fastai's xresnet; ResNet-C)
EXPANSION = 4  # a bottleneck's output width over its inner width


@dataclass
class XResNetConfig(ConfigDict):
    """An xresnet: the 3-convolution stem, then stages of `layers[i]` basic or bottleneck blocks, pool, linear."""

    label: ClassVar[str] = "xresnet"
    layers: tuple[int, ...] = (2, 2, 2, 2)  # xresnet18
    bottleneck: bool = False  # 1x1-3x3-1x1 blocks of 4x expansion (xresnet26/50/101) instead of two 3x3 convs
    width_factor: float = 1.0  # stage widths 64/128/256/512 times this (0.5: a quarter of the compute)
    act: str = "relu"  # relu | mish (Misra 2019, as the leaderboard's entries)
    num_classes: int = 1000
    img_size: tuple[int, int] = (128, 128)  # any size works (global pooling); recorded for training and inference
    in_chans: int = 3
    zero_init_head: bool = False  # from scratch: PyTorch's default linear head
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        self.img_size = to_pair(self.img_size, "img_size")
        if not self.layers or min(self.layers) < 1:
            raise UsageError(f"layers must list at least one stage of at least one block, got {self.layers}")
        if self.act not in XRESNET_ACTS:
            raise UsageError(f"act must be one of {XRESNET_ACTS}, got {self.act!r}")
        if self.width_factor <= 0 or 64 * self.width_factor != int(64 * self.width_factor):
            raise UsageError(f"width_factor {self.width_factor} must give whole channel counts (e.g. 0.25, 0.5, 1, 2)")

    @property
    def widths(self) -> list[int]:
        """Each stage's output channels (x4 for bottleneck stages)."""
        base = int(64 * self.width_factor)
        return [base * 2**i * (EXPANSION if self.bottleneck else 1) for i in range(len(self.layers))]

    @property
    def depth(self) -> int:
        """Weighted layers: the three stem convolutions, 2 or 3 per block, and the head."""
        return 3 + (3 if self.bottleneck else 2) * sum(self.layers) + 1

    @property
    def total_stride(self) -> int:
        """Downsampling of the feature map: 4 in the stem, then 2 in every stage after the first."""
        return 4 * 2 ** (len(self.layers) - 1)

    @property
    def num_features(self) -> int:
        """Channels of the last stage."""
        return self.widths[-1]
