"""Model names decoded into configs, from tables that cite their sources; `build_model` turns any config into a model.

ViTs are variant strings ("B/16", hybrids "R50+B/16") or presets; ConvNets are "resnet20" ... "resnet110"
(He et al. 2016, CIFAR), "resnetv2_50x1" (BiT, any depth of `RESNETV2_LAYERS`, any integer width), "vgg8"
and "vgg8_wide" (the fast CIFAR VGGs of the airbench line), "xresnet18" ... "xresnet101" (Bag-of-Tricks ResNet-D, the
Imagenette leaderboard's kind; "xresnet18x0.5" a width, "xresnet18_mish" Mish).
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
from typing import TYPE_CHECKING, Any

from vitkit import configs
from vitkit.errors import UsageError
from vitkit.models.config import ViTConfig
from vitkit.models.convnet_config import (
    CIFAR_DEPTHS,
    RESNETV2_LAYERS,
    XRESNET_LAYERS,
    CifarResNetConfig,
    CifarVGGConfig,
    ResNetV2Config,
    XResNetConfig,
)
from vitkit.models.stems import check_stem

if TYPE_CHECKING:
    from vitkit.models.interface import Model

log = logging.getLogger("vitkit.models")

ArchConfig = ViTConfig | CifarResNetConfig | ResNetV2Config | CifarVGGConfig | XResNetConfig

# The "architecture" recorded in a checkpoint's config.json -> (config class, model class as "module:Class"). The
# model's module is imported when a model is built (as `vitkit.cli.main.COMMANDS` does), so that names and recipes
# are checked, and `vitkit train --help` built, without torch.
ARCHITECTURES: dict[str, tuple[type[ArchConfig], str]] = {
    "vit": (ViTConfig, "vitkit.models.vit:VisionTransformer"),
    "resnet_cifar": (CifarResNetConfig, "vitkit.models.resnet:CifarResNet"),
    "resnetv2": (ResNetV2Config, "vitkit.models.resnet:ResNetV2"),
    "vgg_cifar": (CifarVGGConfig, "vitkit.models.resnet:CifarVGG"),
    "xresnet": (XResNetConfig, "vitkit.models.xresnet:XResNet"),
}

# name: (hidden_dim D, depth L, mlp_dim, num_heads). B, L and H are the ViT paper's Table 1; Ti and S come
# from DeiT (Touvron et al. 2021); M, g and G from big_vision's models/vit.py (Zhai et al. 2022 scaling).
# Mini is vitkit's own: the small CIFAR model of its recipes (MLP ratio 4 as the others, 2 heads of 64).
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "Mini": (128, 6, 512, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
}

# Old names of vitkit's own widths. vitkit called Mini "mu" until big_vision's `decode_variant` was read again:
# big_vision's mu is width 32, depth 1, MLP 128, 2 heads (a test-sized model), not vitkit's 128/6/512/2. Run
# directories and recipes that say "mu/4" keep building the model they were trained with.
RENAMED_WIDTHS = {"mu": "Mini"}

# Presets: a variant plus the settings of a well-known checkpoint family, named as timm names them.
PRESETS: dict[str, dict[str, Any]] = {
    "vit_tiny_patch16_224": {"variant": "Ti/16"},
    "vit_tiny_patch16_384": {"variant": "Ti/16", "img_size": 384},
    "vit_small_patch16_224": {"variant": "S/16"},
    "vit_small_patch32_224": {"variant": "S/32"},
    "vit_small_patch16_384": {"variant": "S/16", "img_size": 384},
    "vit_base_patch8_224": {"variant": "B/8"},
    "vit_base_patch16_224": {"variant": "B/16"},
    "vit_base_patch32_224": {"variant": "B/32"},
    "vit_base_patch16_384": {"variant": "B/16", "img_size": 384},
    "vit_base_patch32_384": {"variant": "B/32", "img_size": 384},
    "vit_large_patch16_224": {"variant": "L/16"},
    "vit_large_patch32_224": {"variant": "L/32"},
    "vit_large_patch16_384": {"variant": "L/16", "img_size": 384},
    "vit_huge_patch14_224": {"variant": "H/14"},
    # The paper's ImageNet-21k pre-training checkpoints carry the Dense+tanh pre-logits layer.
    "vit_base_patch16_224_in21k": {"variant": "B/16", "num_classes": 21843, "representation_size": 768},
    "vit_large_patch16_224_in21k": {"variant": "L/16", "num_classes": 21843, "representation_size": 1024},
    "vit_huge_patch14_224_in21k": {"variant": "H/14", "num_classes": 21843, "representation_size": 1280},
    # DeiT (Touvron et al. 2021): plain ones are ViTs; distilled ones add a distillation token and head.
    "deit_tiny_patch16_224": {"variant": "Ti/16"},
    "deit_small_patch16_224": {"variant": "S/16"},
    "deit_base_patch16_224": {"variant": "B/16"},
    "deit_base_patch16_384": {"variant": "B/16", "img_size": 384},
    "deit_tiny_distilled_patch16_224": {"variant": "Ti/16", "distilled": True},
    "deit_small_distilled_patch16_224": {"variant": "S/16", "distilled": True},
    "deit_base_distilled_patch16_224": {"variant": "B/16", "distilled": True},
    "deit_base_distilled_patch16_384": {"variant": "B/16", "img_size": 384, "distilled": True},
    # The paper's hybrids (Sec. 3.1, Table 2/5): a ResNet-50 stem, then ViT on 1x1 patches of its feature map.
    "vit_base_r50_s16_224": {"variant": "R50+B/16"},
    "vit_base_r50_s16_384": {"variant": "R50+B/16", "img_size": 384},
    "vit_base_r50_s16_224_in21k": {"variant": "R50+B/16", "num_classes": 21843, "representation_size": 768},
    "vit_large_r50_s32_224": {"variant": "R50+L/32"},
    "vit_large_r50_s32_384": {"variant": "R50+L/32", "img_size": 384},
    # Small-image models for CIFAR-sized data (32x32, 4x4 patches -> 64 tokens).
    "vit_tiny_patch4_32": {"variant": "Ti/4", "img_size": 32, "num_classes": 10},
    "vit_small_patch4_32": {"variant": "S/4", "img_size": 32, "num_classes": 10},
}

_VARIANT_PATTERN = re.compile(
    r"^(?:(?P<stem>[A-Z]\d+(?:x[\d.]+)?(?:_mish)?|(?:cct|conv|xres)\d+)\+)?(?P<width>[A-Za-z]+)/(?P<patch>\d+)$"
)
_CIFAR_NAME = re.compile(r"^resnet(?P<depth>\d+)$")
_RESNETV2_NAME = re.compile(r"^resnetv2_(?P<depth>\d+)(?:x(?P<width>\d+))?$")
_XRESNET_NAME = re.compile(r"^xresnet(?P<depth>\d+)(?:x(?P<width>\d+(?:\.\d+)?))?(?P<mish>_mish)?$")
# airbench's networks: its 93% widths, and its 94% ones (3.5x the parameters, ~1.5x the time per image here).
VGG_WIDTHS = {"vgg8": (64, 128, 128), "vgg8_wide": (64, 256, 256)}
CONVNET_HELP = (
    f"a CIFAR ResNet ({', '.join(f'resnet{d}' for d in CIFAR_DEPTHS)}) or a BiT ResNetV2 "
    f"(resnetv2_<depth>x<width>, depth {', '.join(map(str, RESNETV2_LAYERS))}, e.g. resnetv2_50x1), vgg8 / vgg8_wide, "
    f"or an xresnet (xresnet<depth>[x<width>][_mish], depth {', '.join(map(str, XRESNET_LAYERS))}, e.g. xresnet18)"
)


def parse_variant(variant: str) -> dict[str, Any]:
    """Decode "B/16" (or the hybrid "R50+B/16") into the config fields it fixes: width, depth, MLP, heads, patch."""
    match = _VARIANT_PATTERN.match(variant.strip())
    if not match or (match["width"] not in VARIANTS and match["width"] not in RENAMED_WIDTHS):
        raise UsageError(
            f"unknown model {variant!r}: use a variant like 'B/16' (width one of {', '.join(VARIANTS)}; "
            f"any patch size), a hybrid like 'R50+B/16' or 'C20+Mini/4', a preset ({', '.join(sorted(PRESETS))}), "
            f"or {CONVNET_HELP}"
        )
    width = RENAMED_WIDTHS.get(match["width"], match["width"])
    if width != match["width"]:
        warn_renamed(match["width"])
    hidden_dim, depth, mlp_dim, num_heads = VARIANTS[width]
    patch = int(match["patch"])
    if patch <= 0:
        raise UsageError(f"patch size must be positive in {variant!r}")
    if match["stem"]:
        check_stem(match["stem"], (patch, patch))  # refuses unknown stems and strides they cannot give
    return {
        "hidden_dim": hidden_dim,
        "depth": depth,
        "mlp_dim": mlp_dim,
        "num_heads": num_heads,
        "patch_size": patch,
        "stem": match["stem"],
        "name": f"{match['stem'] + '+' if match['stem'] else ''}{match['width']}/{patch}",
    }


@functools.cache
def warn_renamed(old: str) -> None:
    """Say once per process that an old width name was read, and what it builds."""
    new = RENAMED_WIDTHS[old]
    log.warning(
        "model width %r is vitkit's old name for %s (%d wide, %d layers; not big_vision's %s): it builds %s",
        old, new, VARIANTS[new][0], VARIANTS[new][1], old, new,
    )  # fmt: skip


def named_fields(name: str) -> tuple[type[ArchConfig], dict[str, Any]]:
    """The config class of a variant string, preset or ConvNet name, and the fields the name fixes."""
    if match := _XRESNET_NAME.match(name):
        depth = int(match["depth"])
        if depth not in XRESNET_LAYERS:
            raise UsageError(f"unknown model {name!r}: use {CONVNET_HELP}")
        layers, bottleneck = XRESNET_LAYERS[depth]
        width, act = float(match["width"] or 1), "mish" if match["mish"] else "relu"
        return XResNetConfig, {
            "layers": layers,
            "bottleneck": bottleneck,
            "width_factor": width,
            "act": act,
            "name": name,
        }
    if name in VGG_WIDTHS:
        return CifarVGGConfig, {"name": name, "widths": VGG_WIDTHS[name]}
    if match := _CIFAR_NAME.match(name):
        depth = int(match["depth"])
        if depth not in CIFAR_DEPTHS:
            raise UsageError(f"unknown model {name!r}: use {CONVNET_HELP}")
        return CifarResNetConfig, {"layers": ((depth - 2) // 6,) * 3, "name": name}
    if match := _RESNETV2_NAME.match(name):
        depth, width = int(match["depth"]), int(match["width"] or 1)
        if depth not in RESNETV2_LAYERS:
            raise UsageError(f"unknown model {name!r}: use {CONVNET_HELP}")
        return ResNetV2Config, {"layers": RESNETV2_LAYERS[depth], "width_factor": width, "name": name}
    if name in PRESETS:
        preset = dict(PRESETS[name])
        return ViTConfig, {**parse_variant(preset.pop("variant")), **preset, "name": name}
    return ViTConfig, parse_variant(name)


def config_class(name: str) -> type[ArchConfig]:
    """The config class of the family of a model name (ViTConfig for "B/16", CifarResNetConfig for "resnet20")."""
    return named_fields(name)[0]


def model_config(name: str, **overrides: Any) -> ArchConfig:
    """The config of a variant string, preset or ConvNet name, with any field of its family overridden.

    Every family goes the same way: the name's fields, then the overrides (None leaves a field alone), checked
    against the family's config (`vitkit.configs.make`: an unknown field names the family and its fields).
    """
    config_type, fields = named_fields(name)
    return configs.make(config_type, {**fields, **{k: v for k, v in overrides.items() if v is not None}})


def build_model(config: ArchConfig) -> Model:
    """A fresh model of any config (ViT, hybrid ViT or ConvNet)."""
    return model_class(architecture_of(config))(config)


def model_class(architecture: str) -> type[Model]:
    """The model class of an architecture name ("vit", "resnet_cifar", ...), its module imported now."""
    module, _, name = ARCHITECTURES[architecture][1].partition(":")
    return getattr(importlib.import_module(module), name)


def architecture_of(config: ArchConfig) -> str:
    """The architecture name a checkpoint records for this config ("vit", "resnet_cifar", "resnetv2", ...)."""
    for name, (config_class, _) in ARCHITECTURES.items():
        if isinstance(config, config_class):
            return name
    raise TypeError(f"{type(config).__name__} is not a vitkit model config")


def config_from_dict(data: dict[str, Any], architecture: str = "vit") -> ArchConfig:
    """Rebuild a config from `to_dict` output and its architecture name (files without one hold ViTs)."""
    if architecture not in ARCHITECTURES:
        raise UsageError(f"unknown architecture {architecture!r}; vitkit knows {', '.join(ARCHITECTURES)}")
    return configs.make(ARCHITECTURES[architecture][0], data)


# Widths timm releases ViTs and DeiTs at, each always with the same head count: every width of the table
# except vitkit's own Mini, which timm does not have.
TIMM_WIDTHS = ("Ti", "S", "M", "B", "L", "H", "g", "G")


def infer_num_heads(hidden_dim: int) -> int | None:
    """The head count of a timm width (fused weights do not show it), or None for a width timm does not use."""
    heads = {VARIANTS[name][0]: VARIANTS[name][3] for name in TIMM_WIDTHS}
    return heads.get(hidden_dim)
