"""Inference on an exported file (.onnx: ONNX Runtime; .pt2: AOTInductor), through the same decoding, batching
and reports as PyTorch's.

`OnnxModel` and `Pt2Model` are nn.Modules over the file's runtime that take the normalised float batch every
vitkit path prepares; for a graph with the preprocessing inside (uint8 input) they turn the batch back into the
uint8 pixels it was made from (exact for images already at the model's size, rounded for resized ones, as a
deployment feeding uint8 would be).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from vitkit.data.normalize import Normalize
from vitkit.errors import UsageError
from vitkit.export.aoti import load_package
from vitkit.export.deps import require
from vitkit.export.metadata import ExportMetadata, metadata_from_props, read_metadata

BACKENDS = {".onnx": "onnxruntime", ".pt2": "aoti"}  # an exported file's extension -> the runtime that runs it


class ExportedModel(nn.Module):
    """An exported model run on CPU by its runtime, callable like the PyTorch model (logits out)."""

    def __init__(self, path: str | Path, meta: ExportMetadata, num_classes: int) -> None:
        super().__init__()
        self.path, self.meta, self.class_names = Path(path), meta, meta.class_names
        self.config = SimpleNamespace(num_classes=num_classes, img_size=(meta.img_size,) * 2)
        self.normalize = Normalize(meta.mean, meta.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float (B, C, S, S) -> logits (B, K) float32."""
        return torch.from_numpy(self.run(images)[0])

    def run(self, images: torch.Tensor) -> list[np.ndarray]:
        """Every graph output for a normalised float batch."""
        x = images.detach().float().cpu()
        if self.meta.input == "uint8":
            x = (self.normalize.inverse(x) * 255).round().clamp(0, 255).to(torch.uint8)
        return self.infer(x.contiguous())

    def infer(self, inputs: torch.Tensor) -> list[np.ndarray]:
        """The runtime's outputs for inputs of the file's type (float or uint8)."""
        raise NotImplementedError


class OnnxModel(ExportedModel):
    """An .onnx file run by ONNX Runtime's CPU provider (`threads`: intra-op threads; 0: its default)."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = read_metadata(path)
        num_classes = session.get_outputs()[0].shape[-1]
        super().__init__(path, meta, num_classes if isinstance(num_classes, int) else len(meta.class_names or []))
        self.session, self.input_name = session, session.get_inputs()[0].name

    def infer(self, inputs: torch.Tensor) -> list[np.ndarray]:
        """ONNX Runtime's outputs."""
        return self.session.run(None, {self.input_name: inputs.numpy()})


class Pt2Model(ExportedModel):
    """A .pt2 AOTInductor package run in this process (`threads`: torch.set_num_threads, which its OpenMP
    kernels follow; 0: leave torch's setting)."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        runner = load_package(path)
        meta = metadata_from_props(runner.get_metadata(), Path(path))
        super().__init__(path, meta, int(meta.model.get("num_classes") or len(meta.class_names or [])))
        self.runner = runner
        if threads:
            torch.set_num_threads(threads)

    def infer(self, inputs: torch.Tensor) -> list[np.ndarray]:
        """The compiled model's outputs."""
        with torch.no_grad():
            outputs = self.runner(inputs)
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        return [output.numpy() for output in outputs]


def open_exported(path: str | Path, threads: int = 0) -> ExportedModel:
    """The exported file `path` with the runtime its extension names (.onnx or .pt2)."""
    backend = BACKENDS.get(Path(path).suffix.lower())
    if backend is None:
        raise UsageError(f"{path} is not an exported model: vitkit runs .onnx and .pt2 files ({', '.join(BACKENDS)})")
    return {"onnxruntime": OnnxModel, "aoti": Pt2Model}[backend](path, threads)


def backend_for(backend: str | None, source: str | Path) -> str:
    """The `--backend` of predict and eval: as given, else by the extension (onnxruntime for .onnx, aoti for
    .pt2, torch for anything else: a checkpoint). An exported backend must match the file it is given."""
    native = BACKENDS.get(Path(str(source)).suffix.lower(), "torch")
    chosen = backend or native
    if chosen != "torch" and chosen != native:
        wanted = next(suffix for suffix, name in BACKENDS.items() if name == chosen)
        raise UsageError(f"--backend {chosen} runs {wanted} files, and {source} is not one; its backend is {native}")
    return chosen


def load_exported(path: str | Path, threads: int = 0):  # -> LoadedModel
    """An exported file as a `LoadedModel` (model, preprocessing, path, device) for predict and eval."""
    from vitkit.inference import LoadedModel, Preprocessing

    model = open_exported(path, threads)
    meta = model.meta
    prep = Preprocessing(
        img_size=meta.img_size,
        mean=tuple(meta.mean),
        std=tuple(meta.std),
        class_names=meta.class_names,
        source=f"metadata of {path}",
    )
    return LoadedModel(model, prep, Path(path), torch.device("cpu"))


def predict_exported(path: str | Path, images: list[str], *, top_k: int = 5):
    """`vitkit.inference.predict_files` for an exported file: the same predictions, skipped files and path."""
    from vitkit.inference.predict import top_predictions

    return top_predictions(load_exported(path), images, top_k)


def evaluate_exported(path: str | Path, data_path: str | Path, *, split: str | None = None, batch_size: int = 256):
    """`vitkit.inference.evaluate_checkpoint` for an exported file on `data_path` (it has no run data)."""
    from vitkit.data.augment import EvalTransform
    from vitkit.inference import Evaluation, evaluate
    from vitkit.inference.evaluate import images_to_evaluate

    if data_path is None:
        raise UsageError(f"{path} is an exported model without its training data: give the images with --data DIR")
    model, prep, checkpoint, device = load_exported(path)
    images, data = images_to_evaluate(model, prep, checkpoint, data_path, split)
    transform = EvalTransform(prep.img_size, prep.mean, prep.std)
    result = evaluate(model, images, transform, batch_size=batch_size, device=device, keep_logits=True)
    return Evaluation(result, checkpoint, data, prep)
