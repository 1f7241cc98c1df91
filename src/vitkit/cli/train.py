"""Train a ViT: `vitkit train` alone trains the embedded digits recipe; --config RECIPE and flags change it.

`vitkit train --data DIR` with no recipe and no --model plans the run for that data and this machine
(`vitkit.training.autoplan`): resolution, model, augmentation and schedule, printed with a reason each.

Every recipe knob has a flag (explicit flags override the --config file). `--resume RUN_DIR` continues a
stopped run exactly where its last checkpoint left it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any

from vitkit.configs import Knob, Words, add_flag, given_flags, knobs
from vitkit.errors import UsageError

# Flags whose name is not simply the field name with dashes (fields of vitkit's own configs declare theirs with
# `knob(flag=...)`; these belong to the data section).
FLAG_NAMES = {
    "data.path": "--data",
    "data.seed": "--split-seed",
    "run.seed": "--seed",
}


def config_fields(defaults: Any = None) -> list[Knob]:
    """Every recipe knob (dotted key, type hint, default, help, flag), in recipe order (`vitkit.configs.knobs`).

    The model section offers `name`, `pretrained`, `new_head` and the model fields a run may override
    (`vitkit.training.config.model_knobs`); the objective section its `name` and the settings of each registered
    objective (`objective.<name>.<field>`). `defaults` (a TrainConfig; the embedded recipe when None) supplies
    the defaults shown.
    """
    from vitkit.training.config import ModelConfig, TrainConfig, model_knobs
    from vitkit.training.objective_registry import OBJECTIVES, settings_class

    out: list[Knob] = []
    defaults = defaults or TrainConfig()
    for section in dataclasses.fields(TrainConfig):
        value = getattr(defaults, section.name)
        if section.name == "model":
            base = ModelConfig(value.name, value.pretrained, value.new_head, {})
            out.extend(k for k in knobs(base, "model", FLAG_NAMES) if k.key != "model.overrides")
            out.extend(model_knobs())
        elif section.name == "objective":
            out.extend(k for k in knobs(value, "objective", FLAG_NAMES) if k.key == "objective.name")
            for name in OBJECTIVES:
                settings_type = settings_class(name)
                if settings_type is not None:
                    out.extend(knobs(value.sections.get(name) or settings_type(), f"objective.{name}", FLAG_NAMES))
        else:
            out.extend(knobs(value, section.name, FLAG_NAMES))
    return out


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


# What --help shows first: the knobs most people touch, one group per section in this order, each with its title.
# Every other knob follows, in one group per section in recipe order ("more ... options").
FIRST_KNOBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model": ("model", ("name", "pretrained", "new_head", "patch_size", "hidden_dim", "depth", "num_heads",
                        "mlp_dim", "pool", "posemb", "drop_path")),
    "data": ("data", ("path", "img_size", "val_fraction", "mean", "std", "num_workers")),
    "augment": ("augmentation", ("crop", "hflip", "randaugment_n", "randaugment_m", "mixup", "cutmix",
                                 "label_smoothing")),
    "optim": ("optimisation", ("optimizer", "lr", "weight_decay", "schedule", "warmup_epochs", "clip_grad",
                               "ema_decay")),
    "run": ("run", ("epochs", "steps", "batch_size", "time_budget_min", "seed", "eval_tta")),
    "runtime": ("runtime", ("device", "precision", "threads", "compile", "distributed")),
}  # fmt: skip


def add_config_flags(
    parser: argparse.ArgumentParser,
    defaults: Any = None,
    skip: tuple[str, ...] = (),
    shown: dict[str, str] | None = None,
) -> None:
    """One flag per recipe knob (except the dotted keys in `skip`): first the most used ones (`FIRST_KNOBS`), grouped
    model / data / augmentation / optimisation / run / runtime, then the rest by section; `defaults` as in
    `config_fields`, and `shown` replaces the default a help text names for some keys."""
    knobs = [k for k in config_fields(defaults) if k.key not in skip]
    first = {f"{section}.{name}": title for section, (title, names) in FIRST_KNOBS.items() for name in names}
    groups = {
        title: parser.add_argument_group(f"{title} (recipe section '{s}')") for s, (title, _) in FIRST_KNOBS.items()
    }
    for knob in knobs:
        section = knob.key.split(".")[0]
        title = FIRST_KNOBS[section][0] if section in FIRST_KNOBS else section
        if knob.key not in first and f"more {title}" not in groups:
            more = f"more {title} options" if section in FIRST_KNOBS else title
            groups[f"more {title}"] = parser.add_argument_group(f"{more} (recipe section '{section}')")
    by_key = {knob.key: knob for knob in knobs}
    for knob in [by_key[key] for key in first if key in by_key] + [k for k in knobs if k.key not in first]:
        if knob.key in (shown or {}):
            knob = dataclasses.replace(knob, default=Words((shown or {})[knob.key]))
        section = knob.key.split(".")[0]
        title = FIRST_KNOBS[section][0] if section in FIRST_KNOBS else section
        add_flag(groups[first.get(knob.key) or f"more {title}"], knob)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe knobs given explicitly on the command line, as dotted keys."""
    return given_flags(args)


def run(args: argparse.Namespace) -> int:
    """Train (or resume), print where the results are; exit 1 when the loss diverged."""
    from vitkit.training import load_config

    overrides = overrides_from(args)
    if args.resume:
        if args.config or args.out or args.overwrite:
            raise UsageError("--resume RUN_DIR takes the config and directory of that run; drop --config/--out")
        return train_and_report(None, args, "train", overrides)
    if args.config is None and overrides.get("data.path", "digits") != "digits" and "model.name" not in overrides:
        return train_and_report(planned_config(overrides), args, "train")
    return train_and_report(load_config(args.config, overrides), args, "train")


def planned_config(overrides: dict[str, Any]) -> Any:
    """--data with no recipe and no model: the data-aware plan (`vitkit.training.autoplan`), printed with its
    reasons, then every flag given over it."""
    import torch

    from vitkit.inference.device import resolve_device
    from vitkit.training import autoplan
    from vitkit.training.config import TrainConfig
    from vitkit.training.runtime import default_threads, resolve_precision

    path = overrides["data.path"]
    stats = autoplan.read_stats(
        path, **{key: overrides[f"data.{key}"] for key in autoplan.SIZE_KNOBS if f"data.{key}" in overrides}
    )
    device = resolve_device(overrides.get("runtime.device", "auto"))
    torch.set_num_threads(overrides.get("runtime.threads") or default_threads())
    precision = resolve_precision(overrides.get("runtime.precision", "auto"), device)[0]
    img_size = overrides.get("data.img_size")
    started = time.perf_counter()
    plan, timings = autoplan.plan_run(
        stats, lambda pairs: autoplan.time_candidates(pairs, stats.classes, precision, str(device)),
        epochs=overrides.get("run.epochs"), budget_min=overrides.get("run.time_budget_min") or None, img_size=img_size,
    )  # fmt: skip
    print(
        f"vitkit train: no recipe and no model given, so the run is planned for {path} ({stats.train_images} "
        f"training / {stats.val_images} validation images, {stats.classes} classes, median shorter side "
        f"{stats.short_side} px) and this machine ({precision}, {torch.get_num_threads()} threads; {len(timings)} "
        f"candidate(s) timed in {time.perf_counter() - started:.0f} s); a flag replaces any choice:\n"
        + plan.describe(set(overrides)),
        flush=True,
    )
    return TrainConfig.from_dict(plan.recipe(), origin="the data-aware plan", complete=False).replace(
        overrides, origin="command line"
    )


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
        top5 = f"top-5 {summary['val_top5']:.2f}%, " if "val_top5" in summary else ""
        best = f"best val top-1 {summary['val_top1']:.2f}% ({top5}"
    else:
        best = f"best val {summary['best_metric']} {summary['best_value']:.4g} ("
    return (
        f"{best}epoch {summary['best_epoch']}, {summary['best_weights']} weights); {summary['epochs']} epochs in "
        f"{summary['wall_s']:.0f} s, {summary['train_images_per_s']:.0f} train images/s, data wait "
        f"{100 * summary['data_wait_share']:.1f}%; {summary['precision']}, {summary['threads']} threads\n"
        f"results in {out}/: summary.json, metrics.csv, curves.png, checkpoints/best, checkpoints/last"
    )
