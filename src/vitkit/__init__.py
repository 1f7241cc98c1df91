"""vitkit: Vision Transformers as the paper writes them (Dosovitskiy et al. 2020), in PyTorch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vitkit.checkpoints import create_model, load, save
    from vitkit.models import VisionTransformer, ViTConfig

__version__ = "0.1.0"
__all__ = ["ViTConfig", "VisionTransformer", "__version__", "create_model", "load", "save"]

# Name -> module that defines it. Imported on first use (PEP 562), so that `import vitkit` and `vitkit --help`
# do not import torch: a command imports what it runs.
_LAZY = {
    "create_model": "vitkit.checkpoints",
    "load": "vitkit.checkpoints",
    "save": "vitkit.checkpoints",
    "VisionTransformer": "vitkit.models",
    "ViTConfig": "vitkit.models",
}


def __getattr__(name: str) -> Any:
    """`vitkit.create_model` and the other public names, imported when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module 'vitkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
