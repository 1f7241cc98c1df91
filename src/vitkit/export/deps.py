"""The optional dependencies of export (onnx, onnxscript, onnxruntime), imported only when used."""

from __future__ import annotations

import importlib
from types import ModuleType

from vitkit.errors import UsageError


def require(module: str) -> ModuleType:
    """Import `module` (e.g. "onnxruntime"), or say how to install the export extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise UsageError(
            f"{module} is not installed; ONNX export and ONNX Runtime inference need it: pip install vitkit[export]"
        ) from error
