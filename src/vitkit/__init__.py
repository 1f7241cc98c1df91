"""vitkit: Vision Transformers as the paper writes them (Dosovitskiy et al. 2020), in PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitkit.lazy import lazy_package

if TYPE_CHECKING:
    from vitkit.checkpoints import create_model, load, save
    from vitkit.models import VisionTransformer, ViTConfig

__version__ = "0.1.0"
__all__ = ["ViTConfig", "VisionTransformer", "__version__", "create_model", "load", "save"]

# Imported on first use, so that `import vitkit` and `vitkit --help` do not import torch: a command imports what it
# runs.
lazy_package(
    __name__,
    {"vitkit.checkpoints": ("create_model", "load", "save"), "vitkit.models": ("VisionTransformer", "ViTConfig")},
)
