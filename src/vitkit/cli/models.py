"""List models with layers, widths, heads, parameters and measured GFLOPs (the paper's Table 1, and ConvNets)."""

from __future__ import annotations

import argparse
import json

DEFAULT_NAMES = ["Ti/16", "S/16", "B/32", "B/16", "L/32", "L/16", "H/14"]
CONVNET_NAMES = [
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnetv2_50x1",
    "resnetv2_101x1",
    "vgg8",
    "vgg8_wide",
    "xresnet18x0.5",
    "xresnet18",
    "xresnet50",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit models`."""
    parser.add_argument(
        "names",
        nargs="*",
        help=f"variants, hybrids (R50+B/16), presets or ConvNets (resnet20, resnetv2_50x1); "
        f"default: {' '.join(DEFAULT_NAMES)}",
    )
    parser.add_argument("--convnets", action="store_true", help=f"list the ConvNets instead: {' '.join(CONVNET_NAMES)}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    settings = parser.add_argument_group("counted at")
    settings.add_argument(
        "--img-size", type=int, default=None, help="input resolution for the FLOP count (default: each model's own)"
    )
    settings.add_argument(
        "--num-classes", type=int, default=None, help="classes of the head (default: each model's own)"
    )


def format_table(rows: list) -> str:
    """A markdown table of model summaries; ConvNets have no MLP or heads ('-')."""
    lines = [
        "| Model | Layers | Hidden size D | MLP size | Heads | Params | GFLOPs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        vit = row.architecture == "vit"
        name, mlp, heads = (f"ViT-{row.name}", row.mlp_dim, row.num_heads) if vit else (row.name, "-", "-")
        digits = 1 if vit else 2  # ConvNets are small: 0.27M, 0.08 GFLOPs
        lines.append(
            f"| {name} | {row.depth} | {row.hidden_dim} | {mlp} | {heads} | {row.params / 1e6:.{digits}f}M "
            f"| {row.gflops:.{digits}f} |"
        )
    return "\n".join(lines)


def describe_inputs(rows: list) -> str:
    """'224x224, 1000-class head' for the rows, grouped where models differ."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(f"{row.img_size[0]}x{row.img_size[1]}, {row.num_classes}-class head", []).append(row.name)
    if len(groups) == 1:
        return f"at {next(iter(groups))}"
    return "at their own sizes: " + "; ".join(f"{', '.join(names)}: {setting}" for setting, names in groups.items())


def run(args: argparse.Namespace) -> int:
    """Print the table."""
    from dataclasses import asdict

    from vitkit.models.summary import model_table

    names = args.names or (CONVNET_NAMES if args.convnets else DEFAULT_NAMES)
    rows = model_table(names, img_size=args.img_size, num_classes=args.num_classes)
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print(f"Models {describe_inputs(rows)}")
        print("(GFLOPs: one image, forward, measured by torch.utils.flop_counter; a multiply-add counts as 2)\n")
        print(format_table(rows))
    return 0
