"""The hybrid's ResNet stem in foreign checkpoints: timm's `vit_base_r50_s16_*` and the original `R50+ViT-B_16.npz`.

vitkit names the stem's modules as timm does (`patch_embed.backbone.stem.conv`, `.stages.N.blocks.M.conv1` ...),
so timm state dicts need no renaming. The JAX release (vit_jax `models_vit.py` / `models_resnet.py`) names them

    conv_root/kernel, gn_root/{scale,bias}                          -> stem.conv, stem.norm
    blockI/unitJ/{conv1,conv2,conv3}/kernel, {gn1,gn2,gn3}/{scale,bias}   -> stages.I-1.blocks.J-1.{convK,normK}
    blockI/unitJ/conv_proj/kernel, gn_proj/{scale,bias}            -> stages.I-1.blocks.J-1.downsample.{conv,norm}

with HWIO kernels (transposed to OIHW) and GroupNorm parameters that old files store as (1, 1, 1, C).
`infer_stem` reads the stem's name ("R50") and total stride back from the stage layout.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

from vitkit.errors import UsageError
from vitkit.models.convnet_config import RESNETV2_LAYERS
from vitkit.models.stems import fold_layers

BACKBONE = "patch_embed.backbone."
_UNIT = re.compile(r"^patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\.")
_JAX_UNIT = re.compile(r"^block(\d+)/unit(\d+)/conv1/kernel$")


def is_hybrid(keys: Iterable[str]) -> bool:
    """True when vitkit/timm-named weights carry a CNN stem."""
    return any(key.startswith(BACKBONE) for key in keys)


def stage_layout(keys: Iterable[str], origin: str) -> tuple[int, ...]:
    """Units per stage, from `patch_embed.backbone.stages.N.blocks.M.` keys numbered without gaps."""
    units: dict[int, set[int]] = {}
    for key in keys:
        if match := _UNIT.match(key):
            units.setdefault(int(match[1]), set()).add(int(match[2]))
    if sorted(units) != list(range(len(units))) or any(sorted(u) != list(range(len(u))) for u in units.values()):
        raise UsageError(
            f"{origin}: the hybrid stem's stages and units are not numbered 0..N-1; the file is incomplete"
        )
    return tuple(len(units[index]) for index in range(len(units)))


def infer_stem(state: dict[str, torch.Tensor], origin: str) -> tuple[str, int, int]:
    """The stem name ("R50", "R50x2"), total stride and input channels that a hybrid's backbone weights imply."""
    root = state.get(f"{BACKBONE}stem.conv.weight")
    layers = stage_layout(state, origin)
    if root is None or f"{BACKBONE}stem.norm.weight" not in state or not layers:
        raise UsageError(
            f"{origin}: its CNN stem is not the paper's ResNetV2 hybrid stem (root conv + GroupNorm + bottleneck "
            "stages); vitkit loads only R26/R50/R101/R152 stems (e.g. timm's vit_base_r50_s16_384)"
        )
    width = root.shape[0] / 64
    for depth, full in RESNETV2_LAYERS.items():
        if len(layers) <= len(full) and fold_layers(full, len(layers)) == layers:
            name = f"R{depth}" + (f"x{width:g}" if width != 1 else "")
            return name, 4 * 2 ** (len(layers) - 1), root.shape[1]
    raise UsageError(
        f"{origin}: a ResNet stem with stages {layers} is none of vitkit's stems "
        f"({', '.join(f'R{d} {v}' for d, v in RESNETV2_LAYERS.items())}, with the last stages folded as in the paper)"
    )


def jax_to_vitkit(take: Callable[[str], torch.Tensor], keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """The JAX hybrid's `conv_root`, `gn_root` and `blockI/unitJ` parameters in vitkit names (`take` pops them)."""

    def conv(key: str) -> torch.Tensor:
        return take(f"{key}/kernel").permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW

    def norm(key: str, target: str) -> dict[str, torch.Tensor]:
        return {f"{target}.weight": take(f"{key}/scale").reshape(-1), f"{target}.bias": take(f"{key}/bias").reshape(-1)}

    keys = set(keys)
    state = {"stem.conv.weight": conv("conv_root"), **norm("gn_root", "stem.norm")}
    for match in filter(None, map(_JAX_UNIT.match, sorted(keys))):
        source, target = f"block{match[1]}/unit{match[2]}", f"stages.{int(match[1]) - 1}.blocks.{int(match[2]) - 1}"
        for index in (1, 2, 3):
            state[f"{target}.conv{index}.weight"] = conv(f"{source}/conv{index}")
            state.update(norm(f"{source}/gn{index}", f"{target}.norm{index}"))
        if f"{source}/conv_proj/kernel" in keys:
            state[f"{target}.downsample.conv.weight"] = conv(f"{source}/conv_proj")
            state.update(norm(f"{source}/gn_proj", f"{target}.downsample.norm"))
    return {BACKBONE + key: value for key, value in state.items()}
