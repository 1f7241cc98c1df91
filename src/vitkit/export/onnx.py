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

from vitkit.export.deployable import deployable, patch_size
from vitkit.export.deps import require
from vitkit.export.metadata import ExportMetadata, write_metadata

log = logging.getLogger("vitkit.export")
MAX_SIDE = 4096


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
    wrapper, meta = deployable(source, img_size, include_preprocessing, dynamic_size)
    size, patch = meta.img_size, patch_size(wrapper.model)
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
    write_metadata(out, meta)
    return out, meta
