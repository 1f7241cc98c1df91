"""Look inside a trained ViT: attention maps, attention distance, position-embedding similarity, filters.

Writes one attention PNG per image, the model-level figures, analysis.json and a self-contained
report.html into --out (paper Sec. 4.5, Fig. 6, 7, 11 and 13).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit analyze`."""
    parser.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="run directory (uses checkpoints/best/), checkpoint dir, weights file or hub id",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--images", nargs="+", default=[], metavar="IMG", help="image files to analyse")
    parser.add_argument("--data", metavar="PATH", help="dataset folder in ImageFolder layout (e.g. val/<class>/*.jpg)")
    parser.add_argument("--num-images", type=int, default=8, metavar="N", help="images to take from --data (8)")
    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--img-size", type=int, help="analyse at this resolution (default: the model's)")
    runtime.add_argument("--device", default="cpu", help="torch device (cpu)")
    runtime.add_argument("--batch-size", type=int, default=16, help="images per forward pass (16)")


def run(args: argparse.Namespace) -> int:
    """Run the analyses and say where the report is."""
    from pathlib import Path

    from vitkit.analysis import analyze_checkpoint

    document = analyze_checkpoint(
        args.checkpoint,
        args.out,
        images=args.images,
        data=args.data,
        num_images=args.num_images,
        img_size=args.img_size,
        device=args.device,
        batch_size=args.batch_size,
    )
    out = Path(args.out)
    print(f"analysed {len(document['images'])} image(s) with {document['model']['name']}")
    print(f"report: {out / 'report.html'}")
    print(f"data:   {out / 'analysis.json'}")
    return 0
