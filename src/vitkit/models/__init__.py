"""Models: the ViT of the paper (with its hybrid CNN stem), its configuration, position embeddings, ConvNets.

Every family implements `Model` (models/interface.py), the one interface the rest of vitkit uses.
"""

from typing import TYPE_CHECKING

from vitkit.lazy import lazy_package

if TYPE_CHECKING:
    from vitkit.models.config import ViTConfig
    from vitkit.models.convnet_config import CifarResNetConfig, CifarVGGConfig, ResNetV2Config, XResNetConfig
    from vitkit.models.hybrid import HybridEmbedding
    from vitkit.models.interface import AttentionShape, Labels, Model, labels_of
    from vitkit.models.posemb import PositionEmbedding, resample_posemb, sincos_2d
    from vitkit.models.registry import (
        ARCHITECTURES,
        PRESETS,
        VARIANTS,
        ArchConfig,
        architecture_of,
        build_model,
        config_from_dict,
        model_config,
        parse_variant,
    )
    from vitkit.models.resnet import CifarResNet, CifarVGG, ResNetV2, StdConv2d
    from vitkit.models.vit import VisionTransformer, ViTOutput
    from vitkit.models.xresnet import XResNet

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "VARIANTS",
    "ArchConfig",
    "AttentionShape",
    "CifarResNet",
    "CifarResNetConfig",
    "CifarVGG",
    "CifarVGGConfig",
    "HybridEmbedding",
    "Labels",
    "Model",
    "PositionEmbedding",
    "ResNetV2",
    "ResNetV2Config",
    "StdConv2d",
    "ViTConfig",
    "ViTOutput",
    "VisionTransformer",
    "XResNet",
    "XResNetConfig",
    "architecture_of",
    "build_model",
    "config_from_dict",
    "labels_of",
    "model_config",
    "parse_variant",
    "resample_posemb",
    "sincos_2d",
]

lazy_package(
    __name__,
    {
        "vitkit.models.config": ("ViTConfig",),
        "vitkit.models.convnet_config": ("CifarResNetConfig", "CifarVGGConfig", "ResNetV2Config", "XResNetConfig"),
        "vitkit.models.hybrid": ("HybridEmbedding",),
        "vitkit.models.interface": ("AttentionShape", "Labels", "Model", "labels_of"),
        "vitkit.models.posemb": ("PositionEmbedding", "resample_posemb", "sincos_2d"),
        "vitkit.models.registry": (
            "ARCHITECTURES",
            "PRESETS",
            "VARIANTS",
            "ArchConfig",
            "architecture_of",
            "build_model",
            "config_from_dict",
            "model_config",
            "parse_variant",
        ),
        "vitkit.models.resnet": ("CifarResNet", "CifarVGG", "ResNetV2", "StdConv2d"),
        "vitkit.models.vit": ("VisionTransformer", "ViTOutput"),
        "vitkit.models.xresnet": ("XResNet",),
    },
)
