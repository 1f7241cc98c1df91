"""Fine-tune any pre-trained ViT the paper's way (Sec. 3.2, App. B.1.1) on a labelled image folder.

PRETRAINED is a run directory, a checkpoint directory, a weights file (timm, JAX .npz) or a hub id. Its head
and pre-logits layer are replaced by a zero-initialised head for the classes of --data (--no-new-head keeps
them when the classes are the same), its position embeddings resampled to --img-size (default: its own
resolution), and inputs normalised as it was pre-trained. Then the one training loop runs the fine-tuning
recipe: SGD momentum 0.9, no weight decay, warm-up and cosine decay, clipping at norm 1, batch 512, --steps
steps. Every other recipe knob has a flag.
"""

from __future__ import annotations

import argparse

from vitkit.cli.train import add_config_flags, add_run_arguments, overrides_from, train_and_report
from vitkit.errors import UsageError

SET_BY_COMMAND = ("model.pretrained", "model.name")  # PRETRAINED fixes these
FROM_CHECKPOINT = {key: "PRETRAINED's" for key in ("data.img_size", "data.mean", "data.std")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit finetune`: PRETRAINED, run control, then every recipe knob with the recipe's defaults."""
    from vitkit.training.finetune import finetune_defaults

    parser.add_argument("pretrained", metavar="PRETRAINED", help="checkpoint to fine-tune (any format, or a run dir)")
    add_run_arguments(parser, "finetune")
    add_config_flags(
        parser, finetune_defaults(), skip=SET_BY_COMMAND, shown={**FROM_CHECKPOINT, "data.path": "required"}
    )


def run(args: argparse.Namespace) -> int:
    """Build the fine-tuning config, train, print where the results are; exit 1 when the loss diverged."""
    from vitkit.training.finetune import finetune_config

    overrides = overrides_from(args)
    data = overrides.pop("data.path", None)
    if data is None:
        raise UsageError(
            "vitkit finetune needs --data PATH: a labelled image folder (one sub-folder per class) or CIFAR"
        )
    config = finetune_config(args.pretrained, data, overrides.pop("data.img_size", None), overrides)
    return train_and_report(config, args, "finetune")
