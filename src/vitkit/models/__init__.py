"""Models: the ViT of the paper, its configuration, position embeddings, and the variant table."""

from vitkit.models.config import ViTConfig
from vitkit.models.posemb import PositionEmbedding, resample_posemb, sincos_2d
from vitkit.models.registry import PRESETS, VARIANTS, model_config, parse_variant
from vitkit.models.vit import VisionTransformer, ViTOutput

__all__ = [
    "PRESETS",
    "VARIANTS",
    "PositionEmbedding",
    "ViTConfig",
    "ViTOutput",
    "VisionTransformer",
    "model_config",
    "parse_variant",
    "resample_posemb",
    "sincos_2d",
]
