"""Checks before a run starts: refuse data, sizes and objectives the loop cannot use, saying what to change."""

from __future__ import annotations

from torch import nn

from vitkit.data import DatasetSplits
from vitkit.errors import UsageError
from vitkit.training.config import TrainConfig
from vitkit.training.objectives import Objective
from vitkit.training.runtime import Runtime


def check_run(
    config: TrainConfig, data: DatasetSplits, model: nn.Module, objective: Objective, runtime: Runtime
) -> None:
    """Every check below, in the order a user would fix them."""
    check_splits(data, config, runtime)
    if objective.needs_labels and len(data.class_names) < 2:
        raise UsageError(
            f"{config.data.path} has {len(data.class_names)} class: the {objective.name} objective needs labelled data "
            "with at least 2 class folders (for unlabelled images use `vitkit pretrain --objective mpp`)"
        )
    check_low_res(config, model)


def check_low_res(config: TrainConfig, model: nn.Module) -> None:
    """Progressive resizing needs a smaller size that the patches tile."""
    low, patch = config.run.low_res_size, getattr(model.config, "patch_size", (1, 1))[0]
    if low and (low >= config.data.img_size or low % patch):
        raise UsageError(
            f"run.low_res_size {low} must be smaller than data.img_size {config.data.img_size} and a multiple of "
            f"the patch size {patch}"
        )


def check_splits(data: DatasetSplits, config: TrainConfig, runtime: Runtime) -> None:
    """Refuse data the loop cannot use, saying what to change."""
    run, world = config.run, runtime.dist.world_size
    if len(data.train) < run.batch_size:
        raise UsageError(
            f"the training split has {len(data.train)} images, fewer than one batch of {run.batch_size}; "
            f"use --batch-size {max(1, len(data.train) // 2)} or more data"
        )
    if len(data.val) == 0:
        raise UsageError("the validation split is empty; add a val/ folder or raise --val-fraction")
    if run.batch_size % (run.grad_accum * world):
        raise UsageError(
            f"run.batch_size {run.batch_size} (the global batch) must divide evenly over {world} processes x "
            f"{run.grad_accum} micro-batches; use a multiple of {run.grad_accum * world}"
        )
