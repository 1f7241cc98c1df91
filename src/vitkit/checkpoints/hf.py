"""Hugging Face ViT and DeiT directories translated to vitkit names and settings.

Read: `ViTModel`, `ViTForImageClassification`, `DeiTModel` and `DeiTForImageClassificationWithTeacher` (whose
`cls_classifier` and `distillation_classifier` are vitkit's `head` and `head_dist`). Checkpoints on the hub use
the long-standing names (`vit.encoder.layer.N.attention.attention.query`); transformers 5 renamed the modules
in memory (`layers.N.attention.q_proj`). Both are read.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vitkit.errors import UsageError

MODEL_TYPES = ("vit", "deit")

# The task models nest the encoder under their model type's name.
MODEL_PREFIXES = ("vit.", "deit.")

# transformers' `hidden_act` -> vitkit's activation; "gelu_new" and "gelu_pytorch_tanh" are both tanh GELU.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}

# transformers >= 5 in-memory names -> the names the hub checkpoints use.
MODERN_TO_LEGACY = [
    (r"^layers\.(\d+)\.", r"encoder.layer.\1."),
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
]

# Hub names (without the `vit.` prefix of the task models) -> vitkit names; query/key/value are fused later.
LEGACY_TO_VITKIT = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.distillation_token$", "dist_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed.weight"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.", r"blocks.\1.attn.\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^layernorm\.", "norm."),
    (r"^pooler\.dense\.", "pre_logits."),  # ViTModel's pooler: Dense + tanh on the class token
    (r"^classifier\.", "head."),
    (r"^cls_classifier\.", "head."),  # DeiTForImageClassificationWithTeacher
    (r"^distillation_classifier\.", "head_dist."),
]

# Only used for masked-image-modelling pre-training; inference never reads it.
IGNORED = ("embeddings.mask_token",)

GENERIC_LABEL = re.compile(r"^LABEL_\d+$")


def is_transformers_config(document: dict[str, Any]) -> bool:
    """True for a transformers config.json (it names a `model_type`)."""
    return isinstance(document, dict) and "model_type" in document


def strip_model_prefix(key: str) -> str:
    """The key without the `vit.` / `deit.` scope the task models put the encoder in."""
    for prefix in MODEL_PREFIXES:
        if key.startswith(prefix):
            return key.removeprefix(prefix)
    return key


def is_hf_state_dict(keys: set[str]) -> bool:
    """True for transformers ViT or DeiT weight names (with or without the `vit.` / `deit.` prefix)."""
    return any(strip_model_prefix(key).startswith("embeddings.patch_embeddings.") for key in keys)


def config_fields(document: dict[str, Any], origin: str) -> dict[str, Any]:
    """The vitkit config fields a transformers ViT/DeiT config.json fixes; refuses settings vitkit cannot reproduce."""
    model_type = document.get("model_type")
    if model_type not in MODEL_TYPES:
        raise UsageError(
            f"{origin}: Hugging Face model_type {model_type!r} is not supported; vitkit reads plain ViT and DeiT "
            f"checkpoints (model_type 'vit' or 'deit', e.g. google/vit-base-patch16-224)"
        )
    activation = document.get("hidden_act", "gelu")
    if activation not in ACTIVATIONS:
        raise UsageError(
            f"{origin}: hidden_act {activation!r} is not supported; vitkit's MLP uses exact (erf) GELU ('gelu') or "
            "its tanh approximation ('gelu_new', 'gelu_pytorch_tanh'). Weights trained with another activation "
            "would give different outputs"
        )
    pooler_act = document.get("pooler_act", "tanh")
    if pooler_act != "tanh":
        raise UsageError(f"{origin}: pooler_act {pooler_act!r} is not supported; vitkit's pre-logits layer uses tanh")
    hidden, heads = document.get("hidden_size", 768), document.get("num_attention_heads", 12)
    head_dim = document.get("head_dim")
    if head_dim is not None and head_dim * heads != hidden:
        raise UsageError(
            f"{origin}: head_dim {head_dim} x {heads} heads != hidden_size {hidden}; vitkit needs them equal"
        )
    return {
        "num_heads": heads,
        "layer_norm_eps": float(document.get("layer_norm_eps", 1e-12)),
        "activation": ACTIVATIONS[activation],
        "img_size": as_pair(document.get("image_size", 224)),
        "patch_size": as_pair(document.get("patch_size", 16)),
    }


def as_pair(value: int | list[int]) -> tuple[int, int]:
    """transformers allows an int or a [height, width] list for sizes."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def expected_shape(document: dict[str, Any]) -> dict[str, int]:
    """The architecture numbers config.json claims, to compare with the weights."""
    return {
        "hidden_dim": document.get("hidden_size", 768),
        "depth": document.get("num_hidden_layers", 12),
        "mlp_dim": document.get("intermediate_size", 3072),
    }


def class_names(document: dict[str, Any], num_classes: int) -> list[str] | None:
    """Labels from id2label, or None when they are transformers' placeholders (LABEL_0, ...) or incomplete."""
    id2label = document.get("id2label") or {}
    try:
        labels = [str(id2label[key]) for key in sorted(id2label, key=int)]
    except (TypeError, ValueError):
        return None
    if len(labels) != num_classes or num_classes == 0 or all(GENERIC_LABEL.match(label) for label in labels):
        return None
    return labels


def rename(key: str) -> str | None:
    """The vitkit name of one transformers key, or None when no rule matches."""
    key = strip_model_prefix(key)
    for pattern, replacement in MODERN_TO_LEGACY:
        key = re.sub(pattern, replacement, key)
    for pattern, replacement in LEGACY_TO_VITKIT:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def hf_to_vitkit(state: dict[str, torch.Tensor], origin: str) -> dict[str, torch.Tensor]:
    """Translate transformers ViT/DeiT weights to vitkit names, fusing query/key/value into one qkv projection."""
    renamed, unknown = {}, []
    for key, value in state.items():
        if strip_model_prefix(key) in IGNORED:
            continue
        new_key = rename(key)
        if new_key is None:
            unknown.append(key)
        else:
            renamed[new_key] = value
    if unknown:
        raise UsageError(
            f"{origin} has weights that are not part of a plain ViT ({', '.join(sorted(unknown)[:5])}); vitkit reads "
            "ViTModel, ViTForImageClassification, DeiTModel and DeiTForImageClassificationWithTeacher checkpoints only"
        )
    if "dist_token" in renamed and "head.weight" in renamed and "head_dist.weight" not in renamed:
        raise UsageError(
            f"{origin} is a DeiTForImageClassification: it classifies from the class token alone and ignores its "
            "distillation token, while a distilled vitkit ViT averages a class head and a distillation head. Use a "
            "DeiTForImageClassificationWithTeacher checkpoint (e.g. facebook/deit-base-distilled-patch16-224)"
        )
    return fuse_qkv(renamed)


def fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack separate query/key/value projections into vitkit's fused qkv (rows: q, then k, then v)."""
    out = {}
    for key, value in state.items():
        match = re.match(r"^(blocks\.\d+\.attn)\.(query|key|value)\.(weight|bias)$", key)
        if match is None:
            out[key] = value
        elif match[2] == "query":
            prefix, kind = match[1], match[3]
            parts = [state.get(f"{prefix}.{name}.{kind}") for name in ("query", "key", "value")]
            if any(part is None for part in parts):
                layer = prefix.split(".")[1]
                raise UsageError(f"layer {layer} lacks one of the query/key/value {kind}s; the file is incomplete")
            out[f"{prefix}.qkv.{kind}"] = torch.cat(parts, dim=0)
    return out
