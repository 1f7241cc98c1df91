"""Checks before a run starts: refuse data, sizes and objectives the loop cannot use, saying what to change."""

from __future__ import annotations

from vitkit.data import DatasetSplits
from vitkit.errors import UsageError
from vitkit.models import Model
from vitkit.training.config import TrainConfig
from vitkit.training.objectives import Objective
from vitkit.training.runtime import Runtime


def check_run(config: TrainConfig, data: DatasetSplits, model: Model, objective: Objective, runtime: Runtime) -> None:
    """Every check below, in the order a user would fix them."""
    check_splits(data, config, runtime)
    if objective.needs_labels and len(data.class_names) < 2:
        raise UsageError(
            f"{config.data.path} has {len(data.class_names)} class: the {objective.name} objective needs labelled data "
            "with at least 2 class folders (for unlabelled images use `vitkit pretrain --objective mpp`)"
        )
    check_channels(config, model)
    check_low_res(config, model)
    check_eval_size(config, model)


def check_eval_size(config: TrainConfig, model: Model) -> None:
    """An evaluation size above the training size (FixRes) must be one the model takes: tiled by its patches, or
    allowed by a ConvNet's pooling."""
    size = config.data.eval_img_size
    if not size or size == config.data.img_size:
        return
    patch = model.patch_size
    if patch is not None and (size % patch[0] or size % patch[1]):
        below, above = size // patch[0] * patch[0], -(-size // patch[0]) * patch[0]
        raise UsageError(
            f"data.eval_img_size {size} is not divisible by the patch size {patch[0]}; use {below} or {above}"
        )
    if patch is None:
        try:
            model.config.replace(img_size=(size, size))
        except UsageError as error:
            raise UsageError(f"data.eval_img_size {size} does not suit {type(model).__name__}: {error}") from error


def check_channels(config: TrainConfig, model: Model) -> None:
    """The normalisation has one mean and std per input channel of the model (`in_chans`)."""
    channels = model.config.in_chans
    if len(config.data.mean) != channels:
        raise UsageError(
            f"data.mean and data.std have {len(config.data.mean)} values but the model takes {channels}-channel "
            f"images (model.in_chans); give one value per channel (--mean and --std with {channels} values each)"
        )


def check_low_res(config: TrainConfig, model: Model) -> None:
    """Progressive resizing needs a smaller size the model takes: one the patches tile, or one a ConvNet's pooling
    layers allow (its config validates the size)."""
    low, size = config.run.low_res_size, config.data.img_size
    if not low:
        return
    patch = model.patch_size
    if patch is not None and (low >= size or low % patch[0] or low % patch[1]):
        shown = str(patch[0]) if patch[0] == patch[1] else f"{patch[0]}x{patch[1]}"
        raise UsageError(
            f"run.low_res_size {low} must be smaller than data.img_size {size} and a multiple of the patch size {shown}"
        )
    if low >= size:
        raise UsageError(f"run.low_res_size {low} must be smaller than data.img_size {size}")
    if patch is None:
        # No patch grid: a ConvNet pools any size, down to what its downsampling leaves.
        try:
            model.config.replace(img_size=(low, low))
        except UsageError as error:
            raise UsageError(f"run.low_res_size {low} is too small for {type(model).__name__}: {error}") from error


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
