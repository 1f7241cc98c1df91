"""Train the embedded default (a small ViT on scikit-learn's digits, ~1-2 minutes on CPU) into runs/demo.

Exactly `vitkit train --out runs/demo --overwrite`; then it shows where the results are and classifies a few
held-out digits saved as PNG files, as `vitkit predict` would.
"""

from __future__ import annotations

import argparse

DEMO_DIR = "runs/demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit demo`."""
    parser.add_argument("--out", default=DEMO_DIR, metavar="RUN_DIR", help=f"run directory (default {DEMO_DIR})")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stdout is a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    """Train the default recipe, then print the summary, the files, and predictions for sample digits."""
    from pathlib import Path

    from vitkit.cli.train import format_summary
    from vitkit.inference import predict_files
    from vitkit.training import TrainConfig, train

    summary = train(TrainConfig(), args.out, overwrite=True, progress_bar=args.progress)
    out = Path(args.out)
    samples = save_samples(out / "samples")
    predictions, _, _ = predict_files(out, [str(p) for p in samples], top_k=1, device="cpu")
    print()
    print(format_summary(summary, args.out))
    print("held-out digits, predicted by checkpoints/best:")
    for sample, prediction in zip(samples, predictions, strict=False):
        print(f"  {sample.name}: {prediction.labels[0]} ({100 * prediction.probabilities[0]:.1f}%)")
    print(
        f"next: vitkit eval {args.out}  |  vitkit predict {args.out} {out / 'samples'}/*.png  |  "
        f"vitkit train --resume {args.out} (after a stop)"
    )
    return 0


def save_samples(folder, count: int = 5) -> list:
    """Write the first `count` validation digits of the default split as 32x32 PNG files named by their label."""
    from PIL import Image

    from vitkit.data import load_dataset
    from vitkit.training import TrainConfig

    folder.mkdir(parents=True, exist_ok=True)
    val = load_dataset(TrainConfig().data).val
    paths = []
    for index in range(min(count, len(val))):
        label = val.class_names[int(val.labels[index])]
        path = folder / f"digit_{index}_label_{label}.png"
        Image.fromarray(val.images[index].permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    return paths
