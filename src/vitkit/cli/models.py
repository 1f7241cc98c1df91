"""List ViT variants with layers, widths, heads, parameters and measured GFLOPs (the paper's Table 1)."""

from __future__ import annotations

import argparse
import json

DEFAULT_NAMES = ["Ti/16", "S/16", "B/32", "B/16", "L/32", "L/16", "H/14"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit models`."""
    parser.add_argument("names", nargs="*", help=f"variants or presets (default: {' '.join(DEFAULT_NAMES)})")
    parser.add_argument("--img-size", type=int, default=224, help="input resolution for the FLOP count")
    parser.add_argument("--num-classes", type=int, default=1000, help="classes of the head")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def format_table(rows: list) -> str:
    """A markdown table of model summaries."""
    lines = [
        "| Model | Layers | Hidden size D | MLP size | Heads | Params | GFLOPs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| ViT-{row.name} | {row.depth} | {row.hidden_dim} | {row.mlp_dim} | {row.num_heads} "
            f"| {row.params / 1e6:.1f}M | {row.gflops:.1f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the table."""
    from dataclasses import asdict

    from vitkit.models.summary import model_table

    rows = model_table(args.names or DEFAULT_NAMES, img_size=args.img_size, num_classes=args.num_classes)
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print(f"ViT variants at {args.img_size}x{args.img_size}, {args.num_classes}-class head")
        print("(GFLOPs: one image, forward, measured by torch.utils.flop_counter; a multiply-add counts as 2)\n")
        print(format_table(rows))
    return 0
