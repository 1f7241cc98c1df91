"""The names of the hybrid's CNN stems ("R50", "C20", "cct2", ...), checked against the ViT's patch size, torch-free.

A variant string such as "R50+B/16" is decoded and checked when a recipe is read (models/registry.py); the stems
themselves are built by models/hybrid.py and models/tokenizers.py.
"""

from __future__ import annotations

import re

from vitkit.errors import UsageError
from vitkit.models.convnet_config import (
    CIFAR_DEPTHS,
    RESNETV2_LAYERS,
    XRESNET_LAYERS,
    CifarResNetConfig,
    ResNetV2Config,
    XResNetConfig,
)

TOKENIZER_PATTERN = re.compile(r"^(?P<kind>cct|conv|xres)(?P<layers>\d+)$")


def is_tokenizer(stem: str | None) -> bool:
    """Whether a stem name names one of the convolutional tokenizers (not a ResNet)."""
    return stem is not None and TOKENIZER_PATTERN.match(stem) is not None


def tokenizer_layers(stem: str, patch_size: tuple[int, int]) -> int:
    """The number of stride-2 stages of stem `stem`, checked against the ViT's patch size (its total stride)."""
    match = TOKENIZER_PATTERN.match(stem)
    if match is None:
        raise UsageError(f"unknown tokenizer {stem!r}; use 'cct<n>', 'conv<n>' or 'xres<n>' (n stride-2 layers)")
    layers = int(match["layers"])
    if match["kind"] == "xres" and layers < 2:
        raise UsageError(f"stem {stem} is too short: the xresnet stem alone has stride 4; use 'xres2' or more")
    if layers < 1 or patch_size[0] != patch_size[1] or patch_size[0] != 2**layers:
        raise UsageError(
            f"stem {stem} has total stride {2**layers}, so it needs patch size {2**layers}, got "
            f"{patch_size[0]}x{patch_size[1]}; use '{stem}+Ti/{2**layers}' or another layer count"
        )
    return layers


STEM_PATTERN = re.compile(r"^(?P<family>[RCX])(?P<depth>\d+)(?:x(?P<width>\d+(?:\.\d+)?))?(?P<mish>_mish)?$")
STEM_HELP = (
    f"'R<depth>[x<width>]' (ResNetV2 depth {', '.join(map(str, RESNETV2_LAYERS))}; patch size 4, 8, 16 or 32), "
    f"'X<depth>[x<width>][_mish]' (xresnet depth {', '.join(map(str, XRESNET_LAYERS))}; patch size 4, 8, 16 or 32) "
    f"or 'C<depth>[x<width>]' (CIFAR ResNet depth {', '.join(map(str, CIFAR_DEPTHS))}; patch size 1, 2 or 4)"
)


def fold_layers(layers: tuple[int, ...], stages: int) -> tuple[int, ...]:
    """Keep `stages` stages, moving the units of the removed ones into the last kept stage (App. B)."""
    return layers[: stages - 1] + (sum(layers[stages - 1 :]),)


def stem_config(
    stem: str, patch_size: tuple[int, int], in_chans: int = 3, weight_std: str = "timm", norm_eps: float = 1e-5
) -> CifarResNetConfig | ResNetV2Config | XResNetConfig:
    """The headless ConvNet config a stem name and a total stride (the ViT's patch size) describe.

    `weight_std` and `norm_eps` are the ResNet stems' conventions (timm's or the JAX releases'); the CIFAR
    stems use BatchNorm and ignore them.
    """
    match = STEM_PATTERN.match(stem)
    if not match:
        raise UsageError(f"unknown hybrid stem {stem!r}; use {STEM_HELP}")
    family, depth, width = match["family"], int(match["depth"]), float(match["width"] or 1)
    stride = patch_size[0]
    if match["mish"] and family != "X":
        raise UsageError(f"hybrid stem {stem!r}: only the xresnet stems ('X50_mish') take '_mish'")
    if family in "RX":
        depths = RESNETV2_LAYERS if family == "R" else {d: units for d, (units, _) in XRESNET_LAYERS.items()}
        if depth not in depths:
            raise UsageError(f"unknown hybrid stem {stem!r}; use {STEM_HELP}")
        layers, strides = depths[depth], {4 * 2**i: i + 1 for i in range(4)}
    else:
        if depth not in CIFAR_DEPTHS or width != int(width):
            raise UsageError(f"unknown hybrid stem {stem!r}; use {STEM_HELP}")
        layers, strides = ((depth - 2) // 6,) * 3, {2**i: i + 1 for i in range(3)}
    if patch_size[0] != patch_size[1] or stride not in strides:
        raise UsageError(
            f"stem {stem} cannot give patch size {patch_size[0]}x{patch_size[1]}: its stages downsample by "
            f"{' or '.join(map(str, strides))}; use a variant like '{stem}+B/{max(strides)}'"
        )
    layers = fold_layers(layers, strides[stride])
    if family == "X":
        act, bottleneck = "mish" if match["mish"] else "relu", XRESNET_LAYERS[depth][1]
        return XResNetConfig(layers, bottleneck, width, act, num_classes=0, in_chans=in_chans, name=stem)
    if family == "R":
        conventions = {"weight_std": weight_std, "norm_eps": norm_eps}
        return ResNetV2Config(layers, width, preact=False, num_classes=0, in_chans=in_chans, name=stem, **conventions)
    return CifarResNetConfig(layers, int(16 * width), num_classes=0, in_chans=in_chans, name=stem)


def check_stem(stem: str, patch_size: tuple[int, int]) -> None:
    """Refuse a stem name that names no stem, or a patch size (total stride) the stem cannot give."""
    if is_tokenizer(stem):
        tokenizer_layers(stem, patch_size)
    else:
        stem_config(stem, patch_size)
