"""Evaluate a checkpoint: top-1, top-5 and per-class accuracy, and a confusion-matrix PNG.

CKPT is a run directory (its best checkpoint is used) or a checkpoint directory. Without --data the
checkpoint's own training data is used, split as in training, so the val split is the run's held-out set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit eval`."""
    parser.add_argument("checkpoint", metavar="CKPT", help="run directory or checkpoint directory")
    parser.add_argument(
        "--data", metavar="PATH", help="dataset ('digits', ImageFolder, CIFAR); default: the training data"
    )
    parser.add_argument(
        "--split", choices=("val", "train"), default="val", help="which split to evaluate (default val)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", choices=("bf16", "fp32"), help="default: the precision the run trained with")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where to write eval_SPLIT.json and confusion_SPLIT.png "
        "(default: the run directory, or the checkpoint directory's parent)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the JSON report and the confusion matrix, print the results."""
    from vitkit.training import plot_confusion
    from vitkit.training.inference import evaluate_checkpoint

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    result, checkpoint = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
    )
    out = Path(args.out) if args.out else default_out(Path(args.checkpoint), checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(checkpoint), "split": args.split, **result.to_dict()}
    png = plot_confusion(result, out / f"confusion_{args.split}.png", title=f"{checkpoint} ({args.split})")
    report["confusion_png"] = str(png)
    (out / f"eval_{args.split}.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{checkpoint} on the {args.split} split ({result.images} images)")
    print(f"top-1 {result.top1:.2f}%  top-5 {result.top5:.2f}%  loss {result.loss:.4f}")
    print("per-class accuracy:")
    width = max(len(name) for name in result.class_names)
    for name, accuracy in result.per_class.items():
        print(f"  {name:<{width}}  {'n/a' if accuracy != accuracy else f'{accuracy:6.2f}%'}")
    print(f"confusion matrix: {png}\nreport: {out / f'eval_{args.split}.json'}")
    return 0


def default_out(given: Path, checkpoint: Path) -> Path:
    """The run directory when one was given, else the folder holding the checkpoint."""
    return given if (given / "checkpoints").is_dir() else checkpoint.parent
