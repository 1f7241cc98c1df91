"""`create_model` and `load`: the one way to get a model, fresh or from any supported checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitkit.checkpoints.adapt import adapt_state_dict, load_into
from vitkit.checkpoints.formats import Checkpoint, read_checkpoint
from vitkit.models import VisionTransformer, ViTConfig, model_config, parse_variant
from vitkit.models.registry import PRESETS

# The fields a model name fixes; a checkpoint that disagrees with them is the wrong checkpoint for the name.
ARCHITECTURE_FIELDS = ("hidden_dim", "depth", "mlp_dim", "patch_size")


def create_model(
    name: str | None = None,
    *,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    pretrained: str | Path | None = None,
    **overrides: Any,
) -> VisionTransformer:
    """Build a ViT from a variant ("B/16") or preset name, optionally with weights from any supported checkpoint.

    `num_classes` and `img_size` default to the checkpoint's (or the preset's, else 1000 and 224). When they
    differ from the checkpoint, the head is re-initialised and the position embeddings are resampled.
    `overrides` set any other `ViTConfig` field (e.g. `pool="gap"`, `drop_path=0.1`).
    """
    if name is None and pretrained is None:
        raise ValueError("give a model name (e.g. 'B/16') or a pretrained checkpoint")
    named = _named_config(name) if name is not None else None
    # A timm state dict does not record its head count: an explicit num_heads, else the model name's, fixes it.
    heads = overrides.get("num_heads") or (named.num_heads if named is not None else None)
    checkpoint = read_checkpoint(pretrained, num_heads=heads) if pretrained is not None else None
    config = _resolve_config(name, named, checkpoint, num_classes, img_size, overrides)
    model = VisionTransformer(config)
    if checkpoint is not None:
        state = adapt_state_dict(checkpoint.state_dict, checkpoint.config, model, checkpoint.origin)
        load_into(model, state, checkpoint.origin)
        model.class_names = checkpoint.class_names if config.num_classes == checkpoint.config.num_classes else None
    return model


def load(path: str | Path, **overrides: Any) -> VisionTransformer:
    """Load any supported checkpoint as it is (or changed by `create_model`-style overrides)."""
    return create_model(pretrained=path, **overrides)


def _named_config(name: str) -> ViTConfig:
    """The config a variant string or preset name fixes (a variant string leaves every other field default)."""
    return model_config(name) if name in PRESETS else ViTConfig(**parse_variant(name))


def _resolve_config(
    name: str | None,
    named: ViTConfig | None,
    checkpoint: Checkpoint | None,
    num_classes: int | None,
    img_size: int | tuple[int, int] | None,
    overrides: dict[str, Any],
) -> ViTConfig:
    """Merge name, checkpoint and explicit arguments into one config; explicit arguments win."""
    explicit = {
        k: v for k, v in {"num_classes": num_classes, "img_size": img_size, **overrides}.items() if v is not None
    }
    if checkpoint is None:
        return model_config(name, **explicit)
    config = checkpoint.config
    if named is not None:
        # Only a preset says whether the model is distilled ("deit_*_distilled_*"); a variant string does not.
        for field in ARCHITECTURE_FIELDS + (("distilled",) if name in PRESETS else ()):
            if getattr(named, field) != getattr(config, field):
                raise ValueError(
                    f"checkpoint {checkpoint.origin} has {field}={getattr(config, field)} but model {name!r} has "
                    f"{getattr(named, field)}; pass the matching model name, or omit it to use the checkpoint's"
                )
        config = config.replace(name=named.name)
    return config.replace(**explicit)
