"""What writing a vitkit model in another library's format shares: the checks, and E_pos as one table.

`to_hf.py` and `to_timm.py` write Hugging Face and timm checkpoints; both hold plain ViTs and DeiTs only, and
both store the learned 1D position table of the paper. The checks here refuse, with the reason, a model that
the target's classes cannot compute; the rest is the target's own (its module adds its checks).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from vitkit.checkpoints.native import atomic_directory
from vitkit.errors import UsageError
from vitkit.models import Model, ViTConfig

# vitkit posemb -> how it is written as the target's learned table (exact at the saved resolution).
BAKED_POSEMB = {
    "learned_2d": "its row and column tables summed into one table",
    "sincos_2d": "its fixed sin-cos values as a table",
    "none": "a table of zeros",
}


def require_plain_vit(model: Model, target: str) -> ViTConfig:
    """The model's ViTConfig, or a UsageError naming what `target` ("Hugging Face", "timm") cannot hold."""
    config = model.config
    if not isinstance(config, ViTConfig):
        raise UsageError(
            f"{target} ViT checkpoints hold Vision Transformers; {config.name or type(model).__name__} is a ConvNet "
            "(vitkit's own format is the one that holds it)"
        )
    if config.stem is not None:
        raise UsageError(
            f"the model has a {config.stem} stem (a hybrid or convolutional tokenizer); {target}'s plain ViT and "
            "DeiT classes start from a linear patch projection, so only a plain ViT can be written"
        )
    if config.representation_size:
        raise UsageError(
            f"the model has a pre-logits layer (representation_size={config.representation_size}), which {target}'s "
            "image classifiers lack; fine-tune it with a new head (`vitkit finetune`) or keep vitkit's format"
        )
    if config.num_classes == 0:
        raise UsageError(f"the model has no head (num_classes 0); {target}'s image classifiers need one")
    return config


def position_table(model: Model) -> torch.Tensor:
    """E_pos as the learned (1, prefix + N, D) table HF and timm add after the prefix tokens, at the model's size.

    The other kinds are exact at this resolution; at another one the target resamples the table bicubically
    instead of recomputing it (sincos_2d) or resampling each axis (learned_2d). 'none' is a table of zeros.
    """
    config = model.config
    prefix = config.num_prefix_tokens
    table = model.pos_embed(config.grid_size)
    if table is None:
        return torch.zeros(1, prefix + config.num_patches, config.hidden_dim)
    table = table.detach().float().cpu()
    if prefix and not model.pos_embed.covers_prefix():
        table = torch.cat([table.new_zeros(1, prefix, table.shape[2]), table], dim=1)
    return table.clone()


def label_names(model: Model, class_names: list[str] | None) -> list[str]:
    """The head's labels: the given names, the model's, else transformers' placeholders LABEL_0, LABEL_1, ..."""
    names = class_names or model.class_names
    if names is not None and len(names) != model.config.num_classes:
        raise UsageError(f"{len(names)} class names for a head of {model.config.num_classes} classes")
    return list(names) if names else [f"LABEL_{i}" for i in range(model.config.num_classes)]


def write_directory(path: str | Path, documents: dict[str, dict], state: dict[str, torch.Tensor]) -> Path:
    """Write the JSON `documents` (file name -> content) and `state` as model.safetensors at `path` (replaced whole)."""
    with atomic_directory(path) as scratch:
        for name, document in documents.items():
            (scratch / name).write_text(json.dumps(document, indent=2) + "\n")
        save_file(state, str(scratch / "model.safetensors"), metadata={"format": "pt"})
    return Path(path)
