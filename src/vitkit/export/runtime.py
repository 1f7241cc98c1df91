"""ONNX Runtime inference on an exported file, through the same decoding, batching and reports as PyTorch's.

`OnnxModel` is an nn.Module over an InferenceSession that takes the normalised float batch every vitkit path
prepares; for a graph with the preprocessing inside (uint8 input) it turns the batch back into the uint8
pixels it was made from (exact for images already at the model's size, rounded for resized ones, as a
deployment feeding uint8 would be).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from vitkit.export.deps import require
from vitkit.export.metadata import ExportMetadata, read_metadata


class OnnxModel(nn.Module):
    """An exported model run by ONNX Runtime on CPU, callable like the PyTorch model (logits out)."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        super().__init__()
        ort = require("onnxruntime")
        self.path, self.meta = Path(path), read_metadata(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        num_classes = self.session.get_outputs()[0].shape[-1]
        if not isinstance(num_classes, int):
            num_classes = len(self.meta.class_names or [])
        self.class_names = self.meta.class_names
        self.config = SimpleNamespace(num_classes=num_classes, img_size=(self.meta.img_size,) * 2)
        self.register_buffer("mean", torch.tensor(self.meta.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.meta.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float (B, 3, S, S) -> logits (B, K) float32."""
        return torch.from_numpy(self.run(images)[0])

    def run(self, images: torch.Tensor) -> list[np.ndarray]:
        """Every graph output for a normalised float batch."""
        x = images.detach().float().cpu()
        if self.meta.input == "uint8":
            x = ((x * self.std + self.mean) * 255).round().clamp(0, 255).to(torch.uint8)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x.numpy())})


def load_onnx(path: str | Path, threads: int = 0):  # -> LoadedModel
    """An .onnx file as a `LoadedModel` (model, preprocessing, path, device) for predict and eval."""
    from vitkit.inference import LoadedModel, Preprocessing

    model = OnnxModel(path, threads)
    meta: ExportMetadata = model.meta
    prep = Preprocessing(
        img_size=meta.img_size,
        mean=tuple(meta.mean),
        std=tuple(meta.std),
        class_names=meta.class_names,
        source=f"ONNX metadata of {path}",
    )
    return LoadedModel(model, prep, Path(path), torch.device("cpu"))


def is_onnx(source: str | Path) -> bool:
    """Whether `source` names an ONNX file (by its extension)."""
    return str(source).lower().endswith(".onnx")


def uses_onnxruntime(backend: str | None, source: str | Path) -> bool:
    """The `--backend` of predict and eval: as given, else ONNX Runtime for a .onnx file and torch otherwise."""
    return (backend or ("onnxruntime" if is_onnx(source) else "torch")) == "onnxruntime"


def predict_onnx(path: str | Path, images: list[str], *, top_k: int = 5):
    """`vitkit.inference.predict_files` for an .onnx file: the same predictions, skipped files and path."""
    from vitkit.inference.predict import top_predictions

    return top_predictions(load_onnx(path), images, top_k)


def evaluate_onnx(path: str | Path, data_path: str | Path, *, split: str | None = None, batch_size: int = 256):
    """`vitkit.inference.evaluate_checkpoint` for an .onnx file on `data_path` (an exported file has no run data)."""
    from vitkit.data.augment import EvalTransform
    from vitkit.errors import UsageError
    from vitkit.inference import Evaluation, evaluate
    from vitkit.inference.evaluate import images_to_evaluate

    if data_path is None:
        raise UsageError(f"{path} is an exported model without its training data: give the images with --data DIR")
    model, prep, checkpoint, device = load_onnx(path)
    images, data = images_to_evaluate(model, prep, checkpoint, data_path, split)
    transform = EvalTransform(prep.img_size, prep.mean, prep.std)
    result = evaluate(model, images, transform, batch_size=batch_size, device=device, keep_logits=True)
    return Evaluation(result, checkpoint, data, prep)
