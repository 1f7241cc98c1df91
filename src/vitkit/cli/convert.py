"""Convert a checkpoint between formats: timm, Hugging Face or JAX into vitkit's, or vitkit's out to HF or timm.

SRC is a run directory (its best checkpoint), a weights file (.pth/.pt/.bin/.safetensors/.npz), a Hugging Face,
timm or vitkit directory, or a hub id (hf-hub:<owner>/<repo>, timm:<model>.<tag>); its format is detected from
the content. --to picks what DST becomes: a vitkit checkpoint (default), a Hugging Face ViTForImageClassification
/ DeiTForImageClassificationWithTeacher directory (config.json with id2label, model.safetensors,
preprocessor_config.json), or a timm directory (model.safetensors and config.json with the timm.create_model
architecture, model_args and pretrained_cfg). What the target cannot compute is refused with the reason. With
--num-classes or --img-size the head is re-initialised (zeros) or the position embeddings resampled on the way.
"""

from __future__ import annotations

import argparse

from vitkit.errors import UsageError

TARGETS = ("vitkit", "hf", "timm")
LOADERS = {
    "hf": "transformers.AutoModelForImageClassification.from_pretrained({dst!r})",
    "timm": "timm.create_model('local-dir:{dst}', pretrained=True)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit convert`."""
    parser.add_argument("src", metavar="SRC", help="checkpoint to read (run, file, directory or hub id)")
    parser.add_argument("dst", metavar="DST", help="directory to write")
    parser.add_argument(
        "--to", choices=TARGETS, default="vitkit", help="vitkit (default) | hf (transformers) | timm: what DST is"
    )
    model = parser.add_argument_group("model (change it on the way)")
    model.add_argument("--model", help="variant or preset (e.g. B/16); checks the architecture and fixes the heads")
    model.add_argument("--num-classes", type=int, help="classes of the head (a new head starts at zero)")
    model.add_argument("--img-size", type=int, help="input resolution (position embeddings are resampled)")
    model.add_argument("--num-heads", type=int, help="attention heads, for a timm state dict of a width timm lacks")


def run(args: argparse.Namespace) -> int:
    """Read SRC, adapt it as asked, write DST; print what was written (and, for HF or timm, how to load it)."""
    from pathlib import Path

    from vitkit.checkpoints import create_model
    from vitkit.checkpoints.hub import is_hub_id
    from vitkit.inference import read_preprocessing, resolve_checkpoint

    destination = Path(args.dst)
    refuse_to_overwrite(destination, args.to)
    # A run directory reads as its best checkpoint; a hub id stays one, so the model records where it came from.
    source = args.src if is_hub_id(args.src) else resolve_checkpoint(args.src)
    model = create_model(
        args.model, pretrained=source, num_classes=args.num_classes, img_size=args.img_size, num_heads=args.num_heads
    )
    if args.to == "vitkit":
        return write_native(model, destination, args.src)
    from vitkit.checkpoints.outbound import BAKED_POSEMB
    from vitkit.checkpoints.to_hf import write_hf
    from vitkit.checkpoints.to_timm import write_timm

    prep = read_preprocessing(resolve_checkpoint(source), model)  # a hub id's files are in the cache by now
    writer = {"hf": write_hf, "timm": write_timm}[args.to]
    writer(model, destination, mean=prep.mean, std=prep.std, class_names=model.class_names)
    config = model.config
    print(
        f"wrote {destination}: {args.to} {config.hidden_dim}-wide x {config.depth} layers, {config.num_heads} heads, "
        f"{config.img_size[0]}x{config.img_size[1]} px, {config.num_classes} classes, mean {list(prep.mean)} "
        f"std {list(prep.std)} ({prep.source})"
    )
    if config.posemb in BAKED_POSEMB:
        print(f"position embedding {config.posemb}: written as {BAKED_POSEMB[config.posemb]} (exact at this size)")
    print(f"load it: {LOADERS[args.to].format(dst=str(destination))}")
    return 0


def refuse_to_overwrite(destination, target: str) -> None:
    """The writers replace DST whole: never do that to a directory they did not write."""
    from vitkit.checkpoints.native import is_native_checkpoint

    if not destination.exists():
        return
    if target == "vitkit" and is_native_checkpoint(destination):
        return
    if destination.is_dir() and not any(destination.iterdir()):
        return
    kind = "a vitkit checkpoint" if target == "vitkit" else "empty"
    raise UsageError(f"{destination} exists and is not {kind}; choose a new DST or remove it first")


def write_native(model, destination, src: str) -> int:
    """Save as a vitkit checkpoint and print one line saying what was written."""
    from vitkit.checkpoints import save
    from vitkit.models import ViTConfig

    config = model.config
    source_format = config.extra.get("source_format", "vitkit")
    save(model, destination, class_names=model.class_names, metadata={"converted_from": str(src)})
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
