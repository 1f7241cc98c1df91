"""Train a ViT: `vitkit train` alone trains the embedded digits recipe; --config RECIPE and flags change it.

Every recipe knob has a flag (explicit flags override the --config file). `--resume RUN_DIR` continues a
stopped run exactly where its last checkpoint left it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import types
import typing
from typing import Any

# Flags whose name is not simply the field name with dashes.
FLAG_NAMES = {"model.name": "--model", "data.path": "--data", "data.seed": "--split-seed", "run.seed": "--seed"}

HELP = {
    "model.name": "ViT variant ('mu/4', 'Ti/4', 'S/16', ...) or preset name; resets the architecture overrides",
    "model.hidden_dim": "width D (overrides the variant)",
    "model.depth": "number of blocks L",
    "model.num_heads": "attention heads",
    "model.mlp_dim": "MLP hidden size",
    "model.pool": "token (class token) | gap (global average pooling)",
    "model.posemb": "learned | learned_2d | sincos_2d | none",
    "model.dropout": "dropout rate",
    "model.attn_dropout": "attention-probability dropout rate",
    "model.drop_path": "stochastic-depth rate of the last block",
    "model.pretrained": "initialise from this checkpoint (fine-tuning)",
    "data.path": "'digits', an ImageFolder directory, or a CIFAR-10/100 python folder or .tar.gz",
    "data.img_size": "model input resolution",
    "data.val_fraction": "held-out share when the data has no val/ split",
    "data.seed": "seed of the train/val split",
    "data.mean": "normalisation mean (3 values)",
    "data.std": "normalisation std (3 values)",
    "data.cache_dir": "decoded-image cache (default ~/.cache/vitkit)",
    "data.num_workers": "decode worker processes",
    "data.max_memory_gb": "hold decoded images in memory when they fit under this",
    "data.limit_per_class": "keep only the first N images of each class (quick experiments)",
    "augment.crop": "rrc (random resized crop) | pad (pad and crop) | none",
    "augment.rrc_scale": "random-resized-crop area range (2 values)",
    "augment.rrc_ratio": "random-resized-crop aspect-ratio range (2 values)",
    "augment.pad": "pixels of padding for --crop pad",
    "augment.hflip": "random horizontal flips",
    "augment.randaugment_n": "RandAugment operations per image (0 disables)",
    "augment.randaugment_m": "RandAugment magnitude (0-30)",
    "augment.mixup": "Mixup Beta alpha (0 disables)",
    "augment.cutmix": "CutMix Beta alpha (0 disables)",
    "augment.mix_prob": "probability of mixing a batch",
    "augment.random_erasing": "random-erasing probability",
    "augment.label_smoothing": "label smoothing",
    "optim.optimizer": "adamw | sgd",
    "optim.lr": "peak learning rate",
    "optim.weight_decay": "weight decay (not on biases, norms, position embeddings, tokens)",
    "optim.momentum": "SGD momentum",
    "optim.betas": "AdamW betas (2 values)",
    "optim.schedule": "decay after warm-up: cosine | linear | constant",
    "optim.warmup_epochs": "linear warm-up length in epochs",
    "optim.warmup_steps": "linear warm-up length in steps (overrides --warmup-epochs)",
    "optim.min_lr": "final learning rate",
    "optim.clip_grad": "clip the global gradient norm to this (0 disables)",
    "optim.ema_decay": "EMA of the weights, e.g. 0.999 (0 disables)",
    "run.epochs": "epochs",
    "run.batch_size": "images per optimizer step",
    "run.grad_accum": "split each batch into this many micro-batches (same result, less memory)",
    "run.seed": "seed of weights, augmentation and batch order",
    "run.device": "auto | cpu | cuda | cuda:N",
    "run.precision": "bf16 (autocast) | fp16 (CUDA, GradScaler) | fp32",
    "run.eval_batch_size": "validation batch size (default: --batch-size)",
    "run.save_every": "also checkpoint every N steps (0: end of each epoch only)",
    "run.log_every": "steps between log lines when stdout is not a terminal",
    "run.time_budget_min": "fit the run into this many minutes (epochs cut after epoch 1)",
    "run.threads": "torch CPU threads",
    "run.attention": "attention kernel: auto | math | flash",
    "run.compile": "torch.compile the model",
    "run.low_res_size": "progressive resizing: train the first --low-res-epochs epochs at this size",
    "run.low_res_epochs": "epochs at --low-res-size before switching to --img-size",
}


def flag_name(key: str) -> str:
    """The command-line flag of a dotted config key ("optim.lr" -> "--lr")."""
    return FLAG_NAMES.get(key, "--" + key.split(".", 1)[1].replace("_", "-"))


def config_fields() -> list[tuple[str, Any, Any]]:
    """(dotted key, type hint, default) of every recipe knob, in recipe order."""
    from vitkit.training.config import TrainConfig

    out = []
    defaults = TrainConfig()
    for section in dataclasses.fields(TrainConfig):
        value = getattr(defaults, section.name)
        hints = typing.get_type_hints(type(value))
        for knob in dataclasses.fields(value):
            out.append((f"{section.name}.{knob.name}", hints[knob.name], getattr(value, knob.name)))
    return out


def add_config_flag(group: argparse._ArgumentGroup, key: str, hint: Any, default: Any) -> None:
    """One flag for one knob; absent flags leave the recipe's value alone (argparse.SUPPRESS)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    help_text = f"{HELP.get(key, key)} [{key}, default {default!r}]"
    common = {"dest": key, "default": argparse.SUPPRESS, "help": help_text}
    if base is bool:
        group.add_argument(flag_name(key), action=argparse.BooleanOptionalAction, **common)
    elif typing.get_origin(base) is tuple:
        element = typing.get_args(base)[0]
        group.add_argument(flag_name(key), type=element, nargs=len(typing.get_args(base)), metavar="X", **common)
    elif base in (int, float, str):
        nullable = type(None) in typing.get_args(hint)
        group.add_argument(
            flag_name(key), type=_nullable(base) if nullable else base, metavar=key.split(".")[1].upper(), **common
        )
    else:
        group.add_argument(flag_name(key), **common)


def _nullable(kind: type) -> Any:
    """A parser that reads 'none'/'null' as None and anything else as `kind`."""

    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit train`: run control, then one flag per recipe knob, grouped by section."""
    parser.add_argument("--config", metavar="RECIPE", help="YAML recipe (see recipes/); flags override it")
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/train-YYYYmmdd-HHMMSS)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stdout is a terminal; plain log lines otherwise)",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, hint, default in config_fields():
        section = key.split(".")[0]
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} (recipe section '{section}')")
        add_config_flag(groups[section], key, hint, default)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe knobs given explicitly on the command line, as dotted keys."""
    values = {k: v for k, v in vars(args).items() if "." in k}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}


def run(args: argparse.Namespace) -> int:
    """Train (or resume), print where the results are; exit 1 when the loss diverged."""
    from vitkit.training import TrainingDiverged, load_config, train

    overrides = overrides_from(args)
    try:
        if args.resume:
            if args.config or args.out or args.overwrite:
                raise ValueError("--resume RUN_DIR takes the config and directory of that run; drop --config/--out")
            summary = train(None, args.resume, resume=True, overrides=overrides, progress_bar=args.progress)
            out = args.resume
        else:
            config = load_config(args.config, overrides)
            out = args.out or time.strftime("runs/train-%Y%m%d-%H%M%S")
            summary = train(config, out, overwrite=args.overwrite, progress_bar=args.progress)
    except TrainingDiverged as error:
        print(f"vitkit train: {error}", file=sys.stderr)
        return 1
    print(format_summary(summary, out))
    return 0


def format_summary(summary: dict[str, Any], out: str) -> str:
    """A few lines: the best score, time, throughput and where everything is."""
    return (
        f"best val top-1 {summary['val_top1']:.2f}% (top-5 {summary['val_top5']:.2f}%, epoch {summary['best_epoch']}, "
        f"{summary['best_weights']} weights); {summary['epochs']} epochs in {summary['wall_s']:.0f} s, "
        f"{summary['train_images_per_s']:.0f} train images/s, data wait {100 * summary['data_wait_share']:.1f}%\n"
        f"results in {out}/: summary.json, metrics.csv, curves.png, checkpoints/best, checkpoints/last"
    )
