"""Evaluate a checkpoint: top-1, top-5 and per-class accuracy, and a confusion-matrix PNG.

CKPT is a run directory (its best checkpoint is used), a checkpoint directory, a weights file or a hub id.
Without --data the checkpoint's own training data is used, split as in training, so the val split is the
run's held-out set. Other data (--data) is evaluated whole, unless it has its own split (train/ and val/
folders, CIFAR), whose val part is then the default. The output says how many images were read, and from where.
--heads also scores each head of a DeiT checkpoint alone (the default output is their average).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vitkit.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit eval`."""
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="run directory, checkpoint directory, weights file or hub id"
    )
    parser.add_argument(
        "--data", metavar="PATH", help="dataset ('digits', ImageFolder, CIFAR); default: the training data"
    )
    parser.add_argument(
        "--split",
        choices=("val", "train", "all"),
        help="which images: val (default for the training data and for data with its own train/val split), "
        "train, or all (default for other data)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where to write eval_SPLIT.json and confusion_SPLIT.png (default: the run directory, the checkpoint's "
        "parent directory, or the current directory for a hub id)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument(
        "--tta",
        choices=("none", "flip", "multicrop"),
        default="none",
        help="test-time augmentation: average the logits of each image and its mirror (flip), or of six views, "
        "the image and its mirror each also shifted one pixel up-left and down-right (multicrop, airbench's)",
    )
    scoring.add_argument(
        "--heads",
        action="store_true",
        help="also score each head on its own (DeiT: the class and the distillation head; the default output is "
        "their average)",
    )
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    runtime.add_argument("--precision", choices=("bf16", "fp32"), help="default: the precision the run trained with")
    runtime.add_argument(
        "--backend",
        choices=("torch", "onnxruntime", "aoti"),
        help="default: onnxruntime for a .onnx file, aoti (AOTInductor) for a .pt2 package, else torch",
    )
    runtime.add_argument("--batch-size", type=int, default=256, help="images per forward pass (256)")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the JSON report and the confusion matrix, print the results."""
    from vitkit.inference import evaluate_checkpoint, plot_confusion

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    from vitkit.export.runtime import backend_for

    if backend_for(args.backend, args.checkpoint) != "torch":
        from vitkit.export import evaluate_exported  # an exported .onnx or .pt2 file, preprocessing from its metadata

        if args.tta != "none":
            raise UsageError("--tta is for PyTorch checkpoints; an exported model is evaluated on its single view")
        evaluation = evaluate_exported(args.checkpoint, args.data, split=args.split, batch_size=args.batch_size)
    else:
        evaluation = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            split=args.split,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            heads=args.heads,
            tta=args.tta,
        )
    result, checkpoint, data, prep = evaluation
    out = Path(args.out) if args.out else default_out(args.checkpoint, checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": str(checkpoint),
        "data": data.path,
        "split": data.split,
        "evaluated": f"{result.images} images: {data.description}",
        "preprocessing": prep.to_dict(),
        "tta": args.tta,
        **result.to_dict(),
    }
    png = plot_confusion(result, out / f"confusion_{data.split}.png", title=f"{checkpoint} ({data.split})")
    report["confusion_png"] = str(png)
    (out / f"eval_{data.split}.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{checkpoint}: {report['evaluated']}")
    print(f"top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}")
    for name, head in result.heads.items():
        print(f"  {name} head alone: top-1 {head.top1:.2f}%  top-5 {head.top5:.2f}%  loss {head.loss:.4f}")
    print("per-class accuracy:")
    width = max(len(name) for name in result.class_names)
    for name, accuracy in result.per_class.items():
        print(f"  {name:<{width}}  {'n/a' if accuracy != accuracy else f'{accuracy:6.2f}%'}")
    print(f"confusion matrix: {png}\nreport: {out / f'eval_{data.split}.json'}")
    return 0


def default_out(given: str, checkpoint: Path) -> Path:
    """The run directory when one was given, the current directory for a hub id (never the hub's cache), else
    the folder holding the checkpoint."""
    from vitkit.checkpoints.hub import is_hub_id

    if is_hub_id(given):
        return Path.cwd()
    return Path(given) if (Path(given) / "checkpoints").is_dir() else checkpoint.parent
