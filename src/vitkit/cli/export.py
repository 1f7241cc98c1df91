"""Export a checkpoint for deployment: ONNX (optionally int8) or an AOTInductor .pt2 package, with its
preprocessing in the metadata.

CKPT is anything vitkit loads (run directory, checkpoint directory, weights file, hub id). The batch is dynamic;
the resolution is fixed (E_pos resampled once for --img-size) unless --dynamic-size. The metadata
(resolution, crop, mean/std, class names, source hash, vitkit version) goes into the file and a config.json
beside it, so `vitkit predict FILE IMAGE` and `vitkit eval FILE --data DIR` prepare inputs the same way.
With --quantize, --out is the int8 model; the fp32 model it is made from is kept only with --keep-fp32 FILE.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from vitkit.errors import UsageError

FORMATS = ("onnx", "pt2")
ONNX_ONLY = {
    "opset": "--opset",
    "quantize": "--quantize",
    "full_range_int8": "--full-range-int8",
    "calibration_data": "--calibration-data",
    "val_data": "--val-data",
    "keep_fp32": "--keep-fp32",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit export`: the file first, then int8, then the graph's details."""
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="run directory, checkpoint directory, weights file or hub id"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (ONNX Runtime, portable, int8) | pt2 (AOTInductor package for this CPU and torch) (default onnx)",
    )
    parser.add_argument(
        "--out", metavar="FILE", help="output file (default model.onnx or model.pt2); with --quantize, the int8 model"
    )
    parser.add_argument("--img-size", type=int, help="input side in pixels (default: the checkpoint's)")
    int8 = parser.add_argument_group("int8 (onnx only)")
    int8.add_argument("--quantize", choices=("dynamic", "static"), help="write --out as an int8 model")
    int8.add_argument("--keep-fp32", metavar="FILE", help="also keep the fp32 .onnx the int8 model is made from")
    int8.add_argument("--val-data", metavar="DIR", help="report fp32 vs int8 accuracy on these labelled images")
    int8.add_argument("--calibration-data", metavar="DIR", help="images for --quantize static")
    int8.add_argument("--calibration-images", type=int, default=128, help="calibration images (default 128)")
    int8.add_argument(
        "--full-range-int8",
        action="store_true",
        help="8-bit weights instead of 7 (only for CPUs with VNNI/AMX: others saturate; see docs/export.md)",
    )
    graph = parser.add_argument_group("graph")
    graph.add_argument(
        "--include-preprocessing", action="store_true", help="take uint8 RGB images; normalise inside the graph"
    )
    graph.add_argument("--dynamic-size", action="store_true", help="also make the (square) input side dynamic")
    graph.add_argument("--opset", type=int, help="ONNX opset (default 18)")


def run(args: argparse.Namespace) -> int:
    """Export, optionally quantise, and print what was written."""
    from vitkit.export import export_onnx, export_pt2, quantize_onnx

    out = Path(args.out or f"model.{args.format}")
    if out.suffix.lower() != f".{args.format}":
        raise UsageError(
            f"--format {args.format} writes a .{args.format} file (predict and eval go by the name); "
            f"got --out {out}: use --out {out.with_suffix('.' + args.format)}"
        )
    if args.format == "pt2":
        given = [flag for key, flag in ONNX_ONLY.items() if getattr(args, key)]
        if given:
            raise UsageError(f"{', '.join(given)}: ONNX only; drop it, or use --format onnx")
        out, meta = export_pt2(
            args.checkpoint,
            out,
            img_size=args.img_size,
            dynamic_size=args.dynamic_size,
            include_preprocessing=args.include_preprocessing,
        )
        print(f"{out}: {meta.architecture} at {meta.img_size}px, input {meta.input}, AOTInductor package for this CPU")
        return 0
    if args.calibration_images < 1:
        raise UsageError(f"--calibration-images must be >= 1, got {args.calibration_images}")
    if args.quantize == "static" and not args.calibration_data:
        raise UsageError("--quantize static needs --calibration-data DIR (a folder of images)")
    for flag, needs in (("--keep-fp32", args.keep_fp32), ("--val-data", args.val_data)):
        if needs and not args.quantize:
            raise UsageError(f"{flag} is for --quantize (without it, --out is the fp32 model)")
    keep = Path(args.keep_fp32) if args.keep_fp32 else None
    if keep is not None and (keep.suffix.lower() != ".onnx" or keep.resolve() == out.resolve()):
        raise UsageError(f"--keep-fp32 names the fp32 .onnx file, apart from --out {out}; got {keep}")
    with tempfile.TemporaryDirectory(prefix="vitkit-export-") as scratch:
        fp32, meta = export_onnx(
            args.checkpoint,
            keep or (out if not args.quantize else Path(scratch) / "fp32.onnx"),
            img_size=args.img_size,
            dynamic_size=args.dynamic_size,
            opset=args.opset or 18,
            include_preprocessing=args.include_preprocessing,
        )
        shape = f"{meta.architecture} at {meta.img_size}px, input {meta.input}, outputs {', '.join(meta.outputs)}"
        if not args.quantize:
            print(f"{fp32}: fp32, {shape}")
            return 0
        calibration = None
        if args.quantize == "static":
            calibration = calibration_batches(Path(args.calibration_data), fp32, args.calibration_images)
        int8 = quantize_onnx(fp32, out, args.quantize, calibration, not args.full_range_int8)
        bits = "8-bit" if args.full_range_int8 else "7-bit"
        print(f"{int8}: int8 ({args.quantize}, {bits} weights), {shape}")
        print(f"{keep}: fp32, kept (--keep-fp32)" if keep else "fp32 model: not kept (--keep-fp32 FILE keeps it)")
        if args.val_data:
            report_accuracy(fp32, int8, args.val_data)
    return 0


def calibration_batches(folder: Path, model_path: Path, count: int, batch: int = 16):
    """Batches of up to `count` images of `folder` (spread over its sorted files), prepared as the model says."""
    import numpy as np

    from vitkit.data import load_images
    from vitkit.data.decode import is_image_name
    from vitkit.export import read_metadata

    if not folder.is_dir():
        raise UsageError(f"--calibration-data {folder} is not a folder of images")
    files = sorted(str(p) for p in folder.rglob("*") if is_image_name(p))
    if not files:
        raise UsageError(f"--calibration-data {folder} holds no image files")
    chosen = files[:: max(1, len(files) // count)][:count]
    meta = read_metadata(model_path)
    for start in range(0, len(chosen), batch):
        images, _, _ = load_images(chosen[start : start + batch], meta.img_size, meta.mean, meta.std)
        if meta.input == "uint8":
            mean, std = np.array(meta.mean).reshape(1, 3, 1, 1), np.array(meta.std).reshape(1, 3, 1, 1)
            yield np.round((images.numpy() * std + mean) * 255).clip(0, 255).astype(np.uint8)
        else:
            yield images.numpy()


def report_accuracy(fp32: Path, int8: Path, data: str) -> None:
    """Print top-1 of both files on `data` and how often their top-1 agrees."""
    from vitkit.export import evaluate_exported

    base, quantized = evaluate_exported(fp32, data).result, evaluate_exported(int8, data).result
    agree = (base.logits.argmax(1) == quantized.logits.argmax(1)).float().mean().item() * 100
    print(
        f"top-1 fp32 {base.top1:.2f}%  int8 {quantized.top1:.2f}%  change {quantized.top1 - base.top1:+.2f} points  "
        f"agreement {agree:.2f}% ({base.images} images)"
    )
