"""Deployment: export any checkpoint to ONNX with its preprocessing, run it with ONNX Runtime, quantise it to int8.

onnx, onnxscript and onnxruntime are the optional `export` extra (pip install vitkit[export]); they are
imported only inside the functions that need them, so `import vitkit` works without them.
"""

from vitkit.export.metadata import ExportMetadata, read_metadata, write_metadata
from vitkit.export.onnx import export_onnx
from vitkit.export.quantize import quantize_onnx
from vitkit.export.runtime import OnnxModel, evaluate_onnx, is_onnx, load_onnx, predict_onnx

__all__ = [
    "ExportMetadata",
    "OnnxModel",
    "evaluate_onnx",
    "export_onnx",
    "is_onnx",
    "load_onnx",
    "predict_onnx",
    "quantize_onnx",
    "read_metadata",
    "write_metadata",
]
