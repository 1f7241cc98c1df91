"""Train a ViT: `vitkit train` alone trains the embedded digits recipe; --config RECIPE and flags change it.

Every recipe knob has a flag (explicit flags override the --config file). `--resume RUN_DIR` continues a
stopped run exactly where its last checkpoint left it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import types
import typing
from typing import Any

from vitkit.errors import UsageError

# Flags whose name is not simply the field name with dashes.
FLAG_NAMES = {
    "model.name": "--model",
    "data.path": "--data",
    "data.seed": "--split-seed",
    "run.seed": "--seed",
    "objective.name": "--objective",
}


def flag_name(key: str) -> str:
    """The command-line flag of a dotted config key ("optim.lr" -> "--lr")."""
    return FLAG_NAMES.get(key, "--" + key.split(".", 1)[1].replace("_", "-"))


def config_fields(defaults: Any = None) -> list[tuple[str, Any, Any, str]]:
    """(dotted key, type hint, default, help) of every recipe knob, in recipe order.

    Help texts live with the fields (`metadata["help"]`); the model section offers `name`, `pretrained`,
    `new_head` and every field of the model config a run may override (ViTConfig's), with the variant's value
    as default. `defaults` (a TrainConfig; the embedded recipe when None) supplies the defaults shown.
    """
    from vitkit.models import ViTConfig
    from vitkit.models.fields import help_of
    from vitkit.training.config import ModelConfig, TrainConfig, model_config_fields

    out = []
    defaults = defaults or TrainConfig()
    for section in dataclasses.fields(TrainConfig):
        value = getattr(defaults, section.name)
        if section.name == "model":
            hints = typing.get_type_hints(ModelConfig)
            for name in ("name", "pretrained", "new_head"):
                out.append((f"model.{name}", hints[name], getattr(value, name), help_of(ModelConfig, name)))
            for name, hint in model_config_fields().items():
                out.append((f"model.{name}", hint, "the variant's", help_of(ViTConfig, name) or name.replace("_", " ")))
            continue
        hints = typing.get_type_hints(type(value))
        for knob in dataclasses.fields(value):
            key = f"{section.name}.{knob.name}"
            out.append((key, hints[knob.name], getattr(value, knob.name), knob.metadata.get("help", key)))
    return out


def add_config_flag(group: argparse._ArgumentGroup, key: str, hint: Any, default: Any, help: str) -> None:
    """One flag for one knob; absent flags leave the recipe's value alone (argparse.SUPPRESS)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    help_text = f"{help} [{key}, default {default!r}]".replace("%", "%%")
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
    elif typing.get_origin(base) is dict or base is dict:
        return  # a mapping is set in a recipe, not with one flag
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
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    add_run_arguments(parser, "train")
    add_config_flags(parser)


def add_run_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """--out, --overwrite and --progress (shared by train, finetune and pretrain)."""
    parser.add_argument("--out", metavar="RUN_DIR", help=f"run directory (default: runs/{command}-YYYYmmdd-HHMMSS)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stdout is a terminal; plain log lines otherwise)",
    )


class Words(str):
    """A default described in words: help texts show it without quotes."""

    def __repr__(self) -> str:
        return str(self)


def add_config_flags(
    parser: argparse.ArgumentParser,
    defaults: Any = None,
    skip: tuple[str, ...] = (),
    shown: dict[str, str] | None = None,
) -> None:
    """One flag per recipe knob (except the dotted keys in `skip`), grouped by section; `defaults` as in
    `config_fields`, and `shown` replaces the default a help text names for some keys."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, hint, default, help_text in config_fields(defaults):
        if key in skip:
            continue
        section = key.split(".")[0]
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} (recipe section '{section}')")
        default = Words((shown or {})[key]) if key in (shown or {}) else default
        add_config_flag(groups[section], key, hint, default, help_text)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe knobs given explicitly on the command line, as dotted keys."""
    values = {k: v for k, v in vars(args).items() if "." in k}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}


def run(args: argparse.Namespace) -> int:
    """Train (or resume), print where the results are; exit 1 when the loss diverged."""
    from vitkit.training import load_config

    overrides = overrides_from(args)
    if args.resume:
        if args.config or args.out or args.overwrite:
            raise UsageError("--resume RUN_DIR takes the config and directory of that run; drop --config/--out")
        return train_and_report(None, args, "train", overrides)
    return train_and_report(load_config(args.config, overrides), args, "train")


def train_and_report(
    config: Any, args: argparse.Namespace, command: str, overrides: dict[str, Any] | None = None
) -> int:
    """Train `config` into --out (or resume --resume with `overrides`), print the summary; 1 when it diverged."""
    from vitkit.training import TrainingDiverged, train

    resume = getattr(args, "resume", None)
    out = resume or args.out or time.strftime(f"runs/{command}-%Y%m%d-%H%M%S")
    try:
        if resume:
            summary = train(None, resume, resume=True, overrides=overrides, progress_bar=args.progress)
        else:
            summary = train(config, out, overwrite=args.overwrite, progress_bar=args.progress)
    except TrainingDiverged as error:
        print(f"vitkit {command}: {error}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, the main rank speaks for the job
        print(format_summary(summary, out))
    return 0


def format_summary(summary: dict[str, Any], out: str) -> str:
    """A few lines: the best score, time, throughput, how the machine was used, and where everything is."""
    if "val_top1" in summary:
        best = f"best val top-1 {summary['val_top1']:.2f}% (top-5 {summary['val_top5']:.2f}%, "
    else:
        best = f"best val {summary['best_metric']} {summary['best_value']:.4g} ("
    return (
        f"{best}epoch {summary['best_epoch']}, {summary['best_weights']} weights); {summary['epochs']} epochs in "
        f"{summary['wall_s']:.0f} s, {summary['train_images_per_s']:.0f} train images/s, data wait "
        f"{100 * summary['data_wait_share']:.1f}%; {summary['precision']}, {summary['threads']} threads\n"
        f"results in {out}/: summary.json, metrics.csv, curves.png, checkpoints/best, checkpoints/last"
    )
