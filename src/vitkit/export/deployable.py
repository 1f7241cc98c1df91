"""The model as every export format deploys it: loaded, resized, wrapped with its preprocessing, and described.

Shared by `--format onnx` and `--format pt2`, so both take the same input and carry the same metadata.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import vitkit
from vitkit.data.normalize import Normalize
from vitkit.errors import UsageError
from vitkit.export.metadata import ExportMetadata, source_sha256
from vitkit.models import architecture_of

MAX_BATCH = 1 << 16
MAX_SIDE = 4096


class Exportable(nn.Module):
    """The model as deployed: optional uint8 -> normalised input, then logits (and DeiT's two heads)."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], uint8_input: bool) -> None:
        super().__init__()
        self.model, self.uint8_input = model, uint8_input
        self.normalize = Normalize(mean, std)
        self.both_heads = getattr(getattr(model, "config", None), "distilled", False)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """(B, C, S, S) -> logits, or (averaged, class-head, distillation-head) logits for DeiT."""
        if self.uint8_input:
            images = self.normalize(images.float() / 255)
        if not self.both_heads:
            return self.model(images)
        heads = self.model.forward_heads(self.model.forward_features(images))
        return (heads["cls"] + heads["dist"]) / 2, heads["cls"], heads["dist"]

    def output_names(self) -> list[str]:
        """Names of the graph outputs, in order."""
        return ["logits", "logits_cls", "logits_dist"] if self.both_heads else ["logits"]


def deployable(
    source: str | Path, img_size: int | None, include_preprocessing: bool, dynamic_size: bool = False
) -> tuple[Exportable, ExportMetadata]:
    """The checkpoint `source` names, at `img_size` (E_pos resampled once), wrapped, with its metadata."""
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
    return wrapper, meta


def example_input(wrapper: Exportable, meta: ExportMetadata) -> tuple[torch.Tensor, dict[int, object]]:
    """A batch to trace with and its dynamic axes: the batch (1 to MAX_BATCH), and for a dynamic size the square
    side in multiples of the patch, traced at a side other than the native one so that the position-embedding
    interpolation is recorded (at the native side the "same grid: skip" branch would be baked in)."""
    patch = patch_size(wrapper.model)
    side = meta.img_size + max(patch, 8) if meta.dynamic_size else meta.img_size
    example = torch.zeros(2, 3, side, side)  # batch 2: an example batch of 1 would be specialised
    if wrapper.uint8_input:
        example = example.to(torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    if not meta.dynamic_size:
        return example, {0: batch}
    grid = torch.export.Dim("grid", min=max(1, 8 // patch), max=MAX_SIDE // patch)
    return example, {0: batch, 2: patch * grid, 3: patch * grid}


def patch_size(model: nn.Module) -> int:
    """The side every input must be a multiple of: a ViT's (effective) patch size; 1 for a ConvNet (any size)."""
    patch = getattr(model.config, "patch_size", None)
    return int(patch[0]) if patch is not None else 1
