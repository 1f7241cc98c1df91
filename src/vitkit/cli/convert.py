"""Convert a timm, Hugging Face or JAX ViT checkpoint (or a hub id) into a vitkit checkpoint directory.

SRC is a weights file (.pth/.pt/.bin/.safetensors/.npz), a Hugging Face or vitkit directory, or a hub id
(hf-hub:<owner>/<repo>, timm:<model>.<tag>). The format is detected from the content. With --num-classes
or --img-size the head is re-initialised (zeros) or the position embeddings are resampled on the way.
"""

from __future__ import annotations

import argparse

from vitkit.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit convert`."""
    parser.add_argument("src", metavar="SRC", help="checkpoint to read (file, directory or hub id)")
    parser.add_argument("dst", metavar="DST", help="vitkit checkpoint directory to write")
    parser.add_argument("--model", help="variant or preset (e.g. B/16); checks the architecture and fixes the heads")
    parser.add_argument("--num-classes", type=int, help="classes of the head (a new head starts at zero)")
    parser.add_argument("--img-size", type=int, help="input resolution (position embeddings are resampled)")
    parser.add_argument("--num-heads", type=int, help="attention heads, for a timm state dict of a width timm lacks")


def run(args: argparse.Namespace) -> int:
    """Read SRC, adapt it as asked, write DST; print one line saying what was written."""
    from pathlib import Path

    from vitkit.checkpoints import create_model, save
    from vitkit.checkpoints.native import is_native_checkpoint
    from vitkit.models import ViTConfig

    destination = Path(args.dst)
    if destination.exists() and not is_native_checkpoint(destination):
        # `save` replaces the directory as a whole; never do that to something vitkit did not write.
        raise UsageError(f"{destination} exists and is not a vitkit checkpoint; choose a new DST or remove it first")
    model = create_model(
        args.model, pretrained=args.src, num_classes=args.num_classes, img_size=args.img_size, num_heads=args.num_heads
    )
    config = model.config
    source_format = config.extra.get("source_format", "vitkit")
    save(model, destination, class_names=model.class_names, metadata={"converted_from": str(args.src)})
    shape = (
        f"{config.hidden_dim}-wide x {config.depth} layers, {config.num_heads} heads"
        if isinstance(config, ViTConfig)
        else f"{config.name or type(model).__name__}, {config.depth} layers"  # a ConvNet
    )
    print(
        f"wrote {destination}: {source_format} checkpoint, {shape}, {config.img_size[0]}x{config.img_size[1]} px, "
        f"{config.num_classes} classes{' (with class names)' if model.class_names else ''}"
    )
    return 0
