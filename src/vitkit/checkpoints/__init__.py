"""Checkpoints: vitkit's native format and readers for timm, Hugging Face and the original JAX weights."""

from vitkit.checkpoints.adapt import adapt_state_dict, load_into
from vitkit.checkpoints.factory import create_model, load
from vitkit.checkpoints.formats import Checkpoint, read_checkpoint
from vitkit.checkpoints.native import atomic_directory, load_class_names, save

__all__ = [
    "Checkpoint",
    "adapt_state_dict",
    "atomic_directory",
    "create_model",
    "load",
    "load_class_names",
    "load_into",
    "read_checkpoint",
    "save",
]
