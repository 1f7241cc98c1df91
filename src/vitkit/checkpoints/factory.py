"""`create_model` and `load`: the one way to get a model, fresh or from any supported checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitkit.checkpoints.adapt import adapt_state_dict, load_into
from vitkit.checkpoints.formats import Checkpoint, read_checkpoint
from vitkit.errors import UsageError
from vitkit.models import (
    ArchConfig,
    CifarResNetConfig,
    CifarVGGConfig,
    Model,
    ResNetV2Config,
    ViTConfig,
    XResNetConfig,
    architecture_of,
    build_model,
    model_config,
)
from vitkit.models.registry import PRESETS

# The fields a model name fixes; a checkpoint that disagrees with them is the wrong checkpoint for the name.
ARCHITECTURE_FIELDS: dict[type, tuple[str, ...]] = {
    ViTConfig: ("hidden_dim", "depth", "mlp_dim", "patch_size", "stem"),
    CifarResNetConfig: ("layers", "width", "shortcut"),
    ResNetV2Config: ("layers", "width_factor", "preact"),
    CifarVGGConfig: ("widths", "stem_width"),
    XResNetConfig: ("layers", "bottleneck", "width_factor", "act"),
}


def create_model(
    name: str | None = None,
    *,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    pretrained: str | Path | None = None,
    new_head: bool = False,
    **overrides: Any,
) -> Model:
    """Build a model from its name, optionally with weights from any supported checkpoint.

    Names: a ViT variant ("B/16"), a hybrid ("R50+B/16"), a preset ("vit_base_patch16_224") or a ConvNet
    ("resnet20", "resnetv2_50x1"). `num_classes` and `img_size` default to the checkpoint's (or the name's).
    When they differ from the checkpoint, the head is re-initialised and a ViT's position embeddings are
    resampled. `new_head` prepares a checkpoint for fine-tuning (paper Sec. 3.2): the pre-training head and
    pre-logits layer are removed and a zero-initialised head attached, whatever the class count. `overrides`
    set any other config field (e.g. `pool="gap"`, `drop_path=0.1`, `shortcut="B"`).
    """
    if name is None and pretrained is None:
        raise UsageError("give a model name (e.g. 'B/16') or a pretrained checkpoint")
    named = model_config(name) if name is not None else None
    # A timm state dict does not record its head count: an explicit num_heads, else the model name's, fixes it.
    heads = overrides.get("num_heads") or getattr(named, "num_heads", None)
    checkpoint = read_checkpoint(pretrained, num_heads=heads) if pretrained is not None else None
    config = _resolve_config(name, named, checkpoint, num_classes, img_size, overrides)
    if new_head and isinstance(config, ViTConfig):
        config = config.replace(representation_size=None)
    model = build_model(config)
    if checkpoint is not None:
        state = adapt_state_dict(checkpoint.state_dict, checkpoint.config, model, checkpoint.origin, new_head)
        load_into(model, state, checkpoint.origin)
        same_head = config.num_classes == checkpoint.config.num_classes and not new_head
        model.class_names = checkpoint.class_names if same_head else None
    return model


def load(path: str | Path, **overrides: Any) -> Model:
    """Load any supported checkpoint as it is (or changed by `create_model`-style overrides)."""
    return create_model(pretrained=path, **overrides)


def _resolve_config(
    name: str | None,
    named: ArchConfig | None,
    checkpoint: Checkpoint | None,
    num_classes: int | None,
    img_size: int | tuple[int, int] | None,
    overrides: dict[str, Any],
) -> ArchConfig:
    """Merge name, checkpoint and explicit arguments into one config; explicit arguments win."""
    explicit = {
        k: v for k, v in {"num_classes": num_classes, "img_size": img_size, **overrides}.items() if v is not None
    }
    if checkpoint is None:
        return model_config(name, **explicit)
    config = checkpoint.config
    if named is not None:
        if type(named) is not type(config):
            raise UsageError(
                f"checkpoint {checkpoint.origin} holds a {architecture_of(config)} model but {name!r} is a "
                f"{architecture_of(named)}; pass the matching model name, or omit it to use the checkpoint's"
            )
        # Only a preset says whether the model is distilled ("deit_*_distilled_*"); a variant string does not.
        fields = ARCHITECTURE_FIELDS[type(config)] + (("distilled",) if name in PRESETS else ())
        for field in fields:
            if getattr(named, field) != getattr(config, field):
                raise UsageError(
                    f"checkpoint {checkpoint.origin} has {field}={getattr(config, field)} but model {name!r} has "
                    f"{getattr(named, field)}; pass the matching model name, or omit it to use the checkpoint's"
                )
        config = config.replace(name=named.name)
    return config.replace(**explicit)
