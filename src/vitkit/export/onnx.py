"""`vitkit export --format onnx`: any checkpoint vitkit loads -> an .onnx file with its preprocessing inside.

The dynamo exporter (`torch.onnx.export(..., dynamo=True)`) with a dynamic batch. By default the resolution is
fixed: a ViT is rebuilt at --img-size with E_pos resampled once at load time, so the graph holds no
interpolation. `dynamic_size` also makes the (square) side dynamic; the graph is traced at a size other than the
native one so that the position-embedding interpolation is recorded, not a branch that skips it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

import vitkit
from vitkit.errors import UsageError
from vitkit.export.deps import require
from vitkit.export.metadata import ExportMetadata, source_sha256, write_metadata
from vitkit.models import architecture_of

log = logging.getLogger("vitkit.export")
MAX_SIDE = 4096


class Exportable(nn.Module):
    """The model as deployed: optional uint8 -> normalised input, then logits (and DeiT's two heads)."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], uint8_input: bool) -> None:
        super().__init__()
        self.model, self.uint8_input = model, uint8_input
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.both_heads = getattr(getattr(model, "config", None), "distilled", False)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """(B, 3, S, S) -> logits, or (averaged, class-head, distillation-head) logits for DeiT."""
        if self.uint8_input:
            images = (images.float() / 255 - self.mean) / self.std
        if not self.both_heads:
            return self.model(images)
        heads = self.model.forward_heads(self.model.forward_features(images))
        return (heads["cls"] + heads["dist"]) / 2, heads["cls"], heads["dist"]

    def output_names(self) -> list[str]:
        """Names of the graph outputs, in order."""
        return ["logits", "logits_cls", "logits_dist"] if self.both_heads else ["logits"]


def export_onnx(
    source: str | Path,
    out: str | Path,
    *,
    img_size: int | None = None,
    dynamic_size: bool = False,
    opset: int = 18,
    include_preprocessing: bool = False,
) -> tuple[Path, ExportMetadata]:
    """Export the checkpoint `source` names to `out` (.onnx) with vitkit metadata; returns the path and metadata."""
    require("onnx"), require("onnxscript")
    from vitkit.inference import load_for_inference

    model, prep, path, _ = load_for_inference(source, "cpu")
    size = img_size or prep.img_size
    patch = patch_size(model)
    if size % patch or size <= 0:
        raise UsageError(f"--img-size {size} is not divisible by the patch size {patch}; use {size - size % patch}")
    if hasattr(model.config, "posemb") and size != model.config.img_size[0]:
        names = model.class_names
        model = vitkit.create_model(pretrained=path, img_size=size).eval()  # E_pos resampled once, baked in
        model.class_names = names
    wrapper = Exportable(model, list(prep.mean), list(prep.std), include_preprocessing).eval()
    example_size = size + max(patch, 8) if dynamic_size else size
    example = torch.zeros(2, 3, example_size, example_size)
    if include_preprocessing:
        example = example.to(torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    axes: dict[int, object] = {0: batch}
    if dynamic_size:
        side = torch.export.Dim("grid", min=max(1, 8 // patch), max=MAX_SIDE // patch)
        axes = {0: batch, 2: patch * side, 3: patch * side}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=wrapper.output_names(),
            dynamic_shapes={"images": axes},
            opset_version=opset,
            verbose=False,
        )
    program.save(str(out))
    meta = ExportMetadata(
        img_size=size,
        mean=list(prep.mean),
        std=list(prep.std),
        input="uint8" if include_preprocessing else "float",
        class_names=model.class_names,
        outputs=wrapper.output_names(),
        dynamic_size=dynamic_size,
        architecture=architecture_of(model.config),
        model=model.config.to_dict(),
        source=str(path),
        source_sha256=source_sha256(path),
        version=vitkit.__version__,
    )
    write_metadata(out, meta)
    return out, meta


def patch_size(model: nn.Module) -> int:
    """The side every input must be a multiple of: a ViT's (effective) patch size; 1 for a ConvNet (any size)."""
    patch = getattr(model.config, "patch_size", None)
    return int(patch[0]) if patch is not None else 1
