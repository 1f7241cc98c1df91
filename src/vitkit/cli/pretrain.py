"""Self-supervised pre-training: masked patch prediction (paper Sec. 4.6) on any folder of images.

--data is a flat folder of images, an ImageFolder tree (its class folders are ignored) or CIFAR. Half of
the patch embeddings are corrupted and the model learns to predict each corrupted patch's 3-bit mean colour
(--mpp-target for the alternatives). The best checkpoint (lowest validation loss) is a plain ViT that
`vitkit finetune RUN_DIR --data ...` fine-tunes like any other. Every recipe knob has a flag.
"""

from __future__ import annotations

import argparse

from vitkit.cli.train import add_config_flags, add_run_arguments, overrides_from, train_and_report
from vitkit.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit pretrain`: run control, then every recipe knob with the pre-training defaults."""
    from vitkit.training.mpp_config import pretrain_config

    parser.add_argument("--config", metavar="RECIPE", help="YAML recipe (see recipes/); flags override it")
    add_run_arguments(parser, "pretrain")
    add_config_flags(parser, pretrain_config("digits"))


def run(args: argparse.Namespace) -> int:
    """Build the pre-training config, train, print where the results are; exit 1 when the loss diverged."""
    from vitkit.training import load_config
    from vitkit.training.mpp_config import pretrain_config

    overrides = overrides_from(args)
    if "data.path" not in overrides and not args.config:
        raise UsageError("vitkit pretrain needs --data PATH: a folder of images (class sub-folders are ignored)")
    base = load_config(args.config) if args.config else pretrain_config(overrides["data.path"])
    config = base.replace(overrides, origin="command line")
    if config.objective.name == "supervised":
        raise UsageError("vitkit pretrain is self-supervised: use --objective mpp (or `vitkit train` for labels)")
    return train_and_report(config, args, "pretrain")
