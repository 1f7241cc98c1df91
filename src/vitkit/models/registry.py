"""Variant strings ("B/16") and preset names decoded into a ViTConfig, from one table that cites its sources."""

from __future__ import annotations

import re
from typing import Any

from vitkit.models.config import ViTConfig

# name: (hidden_dim D, depth L, mlp_dim, num_heads). B, L and H are the ViT paper's Table 1; Ti and S come
# from DeiT (Touvron et al. 2021); mu, M, g and G from big_vision's models/vit.py (Zhai et al. 2022 scaling).
VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "mu": (128, 6, 512, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
}

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
    # Small-image models for CIFAR-sized data (32x32, 4x4 patches -> 64 tokens).
    "vit_tiny_patch4_32": {"variant": "Ti/4", "img_size": 32, "num_classes": 10},
    "vit_small_patch4_32": {"variant": "S/4", "img_size": 32, "num_classes": 10},
}

_VARIANT_PATTERN = re.compile(r"^(?P<width>[A-Za-z]+)/(?P<patch>\d+)$")


def parse_variant(variant: str) -> dict[str, Any]:
    """Decode "B/16" into the config fields it fixes (width, depth, MLP size, heads, patch size)."""
    match = _VARIANT_PATTERN.match(variant.strip())
    if not match or match["width"] not in VARIANTS:
        raise ValueError(
            f"unknown model {variant!r}: use a variant like 'B/16' (width one of {', '.join(VARIANTS)}; "
            f"any patch size) or a preset ({', '.join(sorted(PRESETS))})"
        )
    hidden_dim, depth, mlp_dim, num_heads = VARIANTS[match["width"]]
    patch = int(match["patch"])
    if patch <= 0:
        raise ValueError(f"patch size must be positive in {variant!r}")
    return {
        "hidden_dim": hidden_dim,
        "depth": depth,
        "mlp_dim": mlp_dim,
        "num_heads": num_heads,
        "patch_size": patch,
        "name": f"{match['width']}/{patch}",
    }


def model_config(name: str, **overrides: Any) -> ViTConfig:
    """The ViTConfig of a variant string or preset name, with any field overridden."""
    fields: dict[str, Any] = {}
    if name in PRESETS:
        preset = dict(PRESETS[name])
        fields.update(parse_variant(preset.pop("variant")))
        fields.update(preset)
        fields["name"] = name
    else:
        fields.update(parse_variant(name))
    unknown = set(overrides) - set(ViTConfig.field_names())
    if unknown:
        raise ValueError(f"unknown ViT config field(s) {sorted(unknown)}; valid fields: {ViTConfig.field_names()}")
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ViTConfig(**fields)


# Widths timm releases ViTs and DeiTs at, each always with the same head count: every width of the table
# except big_vision's mu, which timm does not have.
TIMM_WIDTHS = ("Ti", "S", "M", "B", "L", "H", "g", "G")


def infer_num_heads(hidden_dim: int) -> int | None:
    """The head count of a timm width (fused weights do not show it), or None for a width timm does not use."""
    heads = {VARIANTS[name][0]: VARIANTS[name][3] for name in TIMM_WIDTHS}
    return heads.get(hidden_dim)
