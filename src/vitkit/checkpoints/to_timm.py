"""Write a vitkit ViT or DeiT as a timm model directory (the reverse of `timm.py`).

The directory is what timm's hub repositories hold: model.safetensors (timm's key names, which are vitkit's but
for `pos_embed`) and config.json with the `timm.create_model` architecture, its `model_args` (the keyword
arguments that make timm's VisionTransformer compute this model) and `pretrained_cfg` (input size, mean, std,
crop, interpolation, classes, label names). It loads with `timm.create_model("local-dir:DIR", pretrained=True)`,
or `timm.create_model(architecture, **model_args)` and `load_state_dict`.

vitkit's GAP (mean of the tokens after the final LayerNorm) is timm's `global_pool='avg'` with `fc_norm=False`
(timm's default for 'avg' normalises after pooling: a different function). What timm's kwargs cannot express is
refused: a LayerNorm epsilon other than timm's 1e-6, an MLP width no `mlp_ratio` gives, a hybrid stem or
pre-logits layer (`outbound.py`), a ConvNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vitkit.checkpoints.outbound import label_names, position_table, require_plain_vit, write_directory
from vitkit.errors import UsageError
from vitkit.models import Model, ViTConfig

TIMM_LAYER_NORM_EPS = 1e-6  # timm.layers.LayerNorm's, which VisionTransformer uses; kwargs cannot change it
CROP_PCT = 0.875  # vitkit's evaluation crop (`vitkit.data.decode.CROP_FRACTION`), resized bicubic


def timm_model_args(config: ViTConfig) -> tuple[str, dict[str, Any]]:
    """The `timm.create_model` architecture and keyword arguments that build this ViT, or a UsageError."""
    if config.layer_norm_eps != TIMM_LAYER_NORM_EPS:
        raise UsageError(
            f"the model's LayerNorm epsilon is {config.layer_norm_eps:g}; timm's ViT uses {TIMM_LAYER_NORM_EPS:g} and "
            "its keyword arguments cannot change it (a Hugging Face checkpoint brings 1e-12: use --to hf for it)"
        )
    mlp_ratio = config.mlp_dim / config.hidden_dim
    if int(config.hidden_dim * mlp_ratio) != config.mlp_dim:
        raise UsageError(
            f"timm sizes the MLP as int(embed_dim * mlp_ratio), which no ratio makes {config.mlp_dim} at width "
            f"{config.hidden_dim}; this model cannot be built by timm's ViT"
        )
    args: dict[str, Any] = {
        "img_size": list(config.img_size),
        "patch_size": list(config.patch_size),
        "in_chans": config.in_chans,
        "num_classes": config.num_classes,
        "embed_dim": config.hidden_dim,
        "depth": config.depth,
        "num_heads": config.num_heads,
        "mlp_ratio": mlp_ratio,
        "qkv_bias": config.qkv_bias,
    }
    if config.pool == "gap":
        args.update(class_token=False, global_pool="avg", fc_norm=False)
    if config.activation == "gelu_tanh":
        args["act_layer"] = "gelu_tanh"
    # deit.py's distilled ViT: a distillation token and head, their logits averaged at inference, as vitkit's.
    architecture = "deit_base_distilled_patch16_224" if config.distilled else "vit_base_patch16_224"
    return architecture, args


def write_timm(
    model: Model,
    path: str | Path,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    class_names: list[str] | None = None,
) -> Path:
    """Write `model` as a timm model directory at `path` (replaced whole); returns it."""
    config = require_plain_vit(model, "timm")
    architecture, args = timm_model_args(config)
    labels = label_names(model, class_names) if (class_names or model.class_names) else None
    document = {
        "architecture": architecture,
        "num_classes": config.num_classes,
        "num_features": config.hidden_dim,
        "global_pool": args.get("global_pool", "token"),
        "model_args": args,
        "pretrained_cfg": {
            "tag": "vitkit",
            "custom_load": False,
            "input_size": [config.in_chans, *config.img_size],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": CROP_PCT,
            "crop_mode": "center",
            "mean": list(mean),
            "std": list(std),
            "num_classes": config.num_classes,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": ["head", "head_dist"] if config.distilled else "head",
        },
    }
    if labels:
        document["label_names"] = labels
    return write_directory(path, {"config.json": document}, timm_state_dict(model))


def timm_state_dict(model: Model) -> dict[str, torch.Tensor]:
    """vitkit's weights under timm's names: only the position table differs (`pos_embed`, always a table)."""
    state = {key: value.detach().float().cpu().contiguous() for key, value in model.state_dict().items()}
    for key in [k for k in state if k.startswith("pos_embed.")]:
        del state[key]  # learned_2d's row/col tables: replaced by the one table timm has
    state["pos_embed"] = position_table(model).contiguous()
    return state
