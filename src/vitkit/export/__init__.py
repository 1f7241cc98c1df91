"""Deployment: export any checkpoint to ONNX (run by ONNX Runtime, quantisable to int8) or to an AOTInductor
.pt2 package, with its preprocessing, and run either through vitkit's predict and eval.

onnx, onnxscript and onnxruntime are the optional `export` extra (pip install vitkit[export]); they are
imported only inside the functions that need them, so `import vitkit` works without them. The .pt2 format needs
only torch (with AOTInductor) and a C++ compiler.
"""

from vitkit.export.metadata import ExportMetadata, read_metadata, write_metadata
from vitkit.export.onnx import export_onnx
from vitkit.export.pt2 import export_pt2
from vitkit.export.quantize import quantize_onnx
from vitkit.export.runtime import (
    ExportedModel,
    OnnxModel,
    Pt2Model,
    backend_for,
    evaluate_exported,
    load_exported,
    open_exported,
    predict_exported,
)

__all__ = [
    "ExportMetadata",
    "ExportedModel",
    "OnnxModel",
    "Pt2Model",
    "backend_for",
    "evaluate_exported",
    "export_onnx",
    "export_pt2",
    "load_exported",
    "open_exported",
    "predict_exported",
    "quantize_onnx",
    "read_metadata",
    "write_metadata",
]
