"""`vitkit export --format onnx`: any checkpoint vitkit loads -> an .onnx file with its preprocessing inside.

The dynamo exporter (`torch.onnx.export(..., dynamo=True)`) with a dynamic batch. By default the resolution is
fixed: a ViT is rebuilt at --img-size with E_pos resampled once at load time, so the graph holds no
interpolation. `dynamic_size` also makes the (square) side dynamic; the graph is traced at a size other than the
native one so that the position-embedding interpolation is recorded, not a branch that skips it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vitkit.export.deployable import deployable, example_input
from vitkit.export.deps import require
from vitkit.export.metadata import ExportMetadata, write_metadata


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
    example, axes = example_input(wrapper, meta)
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
