"""vitkit: Vision Transformers as the paper writes them (Dosovitskiy et al. 2020), in PyTorch."""

from vitkit.checkpoints import create_model, load, save
from vitkit.models import VisionTransformer, ViTConfig

__version__ = "0.1.0"
__all__ = ["ViTConfig", "VisionTransformer", "__version__", "create_model", "load", "save"]
