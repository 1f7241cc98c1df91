"""timm's `vit_*` and `deit_*` state dicts (vision_transformer.py, deit.py) translated to vitkit key names.

timm's plain ViT already uses vitkit's block names (`blocks.N.attn.qkv`, `mlp.fc1`, ...), so only three
keys change; DeiT's distilled models add `dist_token` and `head_dist`, which vitkit names alike. What
matters is refusing the timm variants that compute a different function.
"""

from __future__ import annotations

import torch

from vitkit.errors import UsageError

# timm key -> vitkit key, for the keys whose names differ.
RENAMES = {
    "pos_embed": "pos_embed.weight",
    "pre_logits.fc.weight": "pre_logits.weight",  # older in21k checkpoints: Linear + Tanh, as in the paper
    "pre_logits.fc.bias": "pre_logits.bias",
}

# Key fragment -> why weights that have it cannot be loaded into vitkit's ViT exactly.
UNSUPPORTED = {
    "fc_norm.": (
        "it has fc_norm: timm's average-pool models apply LayerNorm after pooling (LN(mean(tokens))), while "
        "vitkit's GAP pools after the final LayerNorm (mean(LN(tokens)), as the paper and big_vision do), so "
        "the weights would compute a different function. Use a class-token timm model (e.g. "
        "vit_base_patch16_224.augreg2_in21k_ft_in1k) instead"
    ),
    "reg_token": "it has register tokens, which vitkit's ViT has no slot for",
    "attn_pool.": "it pools with attention (a MAP head), while vitkit pools with the class token or GAP",
    "norm_pre.": "it has a LayerNorm before the blocks (CLIP-style), which vitkit's ViT does not have",
    ".ls1.": "it uses LayerScale (DeiT III / CaiT-style), which vitkit's blocks do not have",
    ".q_norm.": "it normalises queries and keys (qk-norm), which vitkit's attention does not do",
}


def is_timm_state_dict(keys: set[str]) -> bool:
    """True for timm's ViT layout: a `patch_embed.proj` stem, `blocks.N` and a bare `pos_embed` tensor."""
    return "patch_embed.proj.weight" in keys and "pos_embed" in keys and "blocks.0.attn.qkv.weight" in keys


def check_supported(keys: set[str], origin: str) -> None:
    """Raise a UsageError naming the first timm feature vitkit cannot reproduce exactly."""
    for fragment, reason in UNSUPPORTED.items():
        if any(fragment in key for key in keys):
            raise UsageError(f"cannot load timm checkpoint {origin}: {reason}")


def timm_to_vitkit(state: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """The state dict with vitkit key names; refuses timm variants with a different forward pass."""
    check_supported(set(state), origin)
    return {RENAMES.get(key, key): value for key, value in state.items()}
