"""Predict labels of image files with a checkpoint: the top-k classes and their probabilities per image.

CKPT is a run directory (its best checkpoint), a checkpoint directory, a weights file or a hub id. Images are
prepared as the checkpoint's metadata says (a checkpoint without any says which convention it used). Files
that cannot be read are named with the reason; the exit status is 2 when any file failed, 0 when all succeeded.
The first line says what ran: the backend, the device and the precision (--precision; default: the one the run
trained in, as `vitkit eval`).
"""

from __future__ import annotations

import argparse
import json
import sys

from vitkit.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit predict`."""
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="run directory, checkpoint directory, weights file or hub id"
    )
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    parser.add_argument("--top-k", type=int, default=5, help="labels per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON: what ran, predictions and errors")
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    runtime.add_argument(
        "--precision", choices=("bf16", "fp32"), help="default: the precision the run trained with (as eval)"
    )
    runtime.add_argument(
        "--backend",
        choices=("torch", "onnxruntime", "aoti"),
        help="default: onnxruntime for a .onnx file, aoti (AOTInductor) for a .pt2 package, else torch",
    )


def run(args: argparse.Namespace) -> int:
    """Print the predictions of the good files and the reason for each bad one."""
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    from vitkit.export.runtime import backend_for

    backend = backend_for(args.backend, args.checkpoint)
    if backend != "torch":
        from vitkit.export import load_exported  # an exported .onnx or .pt2 file computes as it was exported

        if args.precision:
            raise UsageError(
                f"--precision is for PyTorch checkpoints; {args.checkpoint} computes in the precision it was "
                "exported in (see `vitkit export --quantize`)"
            )
        loaded = load_exported(args.checkpoint)
        precision = loaded.model.meta.precision
    else:
        from vitkit.inference import load_for_inference, with_precision

        loaded = with_precision(load_for_inference(args.checkpoint, args.device), args.precision)
        precision = loaded.preprocessing.precision
    from vitkit.inference.predict import top_predictions

    predictions, skipped, checkpoint = top_predictions(loaded, args.images, args.top_k)
    ran = {"backend": backend, "device": str(loaded.device), "precision": precision}
    if args.json:
        report = {
            "checkpoint": str(checkpoint),
            **ran,
            "predictions": [p.to_dict() for p in predictions],
            "errors": [{"path": s.path, "reason": s.reason} for s in skipped],
        }
        print(json.dumps(report, indent=2))
    else:
        print(f"{checkpoint}: {backend} on {ran['device']}, {precision}")
        for prediction in predictions:
            ranked = ", ".join(
                f"{label} {100 * p:.1f}%" for label, p in zip(prediction.labels, prediction.probabilities, strict=True)
            )
            print(f"{prediction.path}: {ranked}")
    for bad in skipped:
        print(f"vitkit predict: error: {bad.path}: {bad.reason}", file=sys.stderr)
    if skipped:
        print(f"vitkit predict: {len(skipped)} of {len(args.images)} file(s) could not be read", file=sys.stderr)
        return 2
    return 0
