"""A run's checkpoints: `last` (weights + everything to resume), `best` (by the objective's metric) and `ema`.

Every checkpoint is a native vitkit directory (config.json + model.safetensors, written atomically) whose
metadata records what `vitkit.inference` needs to use it with no extra flags: class names, the resolution
and normalisation it was trained with, the precision, and the whole recipe. Under FSDP the weights and the
optimizer state are gathered to full tensors first, so a checkpoint loads on any number of processes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from vitkit.checkpoints import save
from vitkit.checkpoints.native import read_native, read_native_document, resolve_checkpoint_dir
from vitkit.errors import MissingPathError, UsageError
from vitkit.training.distributed import full_optimizer_state, full_state_dict, load_full_state
from vitkit.training.objectives import Validation
from vitkit.training.state import (
    STATE_FILE,
    RunState,
    load_training_state,
    rank_seed,
    restore_rng,
    seed_everything,
    training_state,
)

if TYPE_CHECKING:
    from vitkit.training.trainer import Trainer

log = logging.getLogger("vitkit.training")


def checkpoint_metadata(trainer: Trainer, weights: str, result: Validation | None = None) -> dict[str, Any]:
    """What a checkpoint records besides the weights: position, scores, and the data settings inference needs."""
    data = trainer.config.data
    meta = {
        "epoch": trainer.state.epoch,
        "step": trainer.state.step,
        "weights": weights,
        "objective": trainer.objective.name,
        "precision": trainer.runtime.precision,
        "runtime": trainer.runtime.describe(),
        "data": {
            "path": data.path,
            "absolute_path": str(Path(data.path).resolve()) if data.path != "digits" else data.path,
            "img_size": data.img_size,
            "mean": list(data.mean),
            "std": list(data.std),
            "val_fraction": data.val_fraction,
            "seed": data.seed,
        },
        "training": trainer.config.to_dict(),
    }
    if result is not None:
        meta.update({f"val_{key}": value for key, value in result.values.items()})
    return meta


def save_weights(
    trainer: Trainer,
    name: str,
    model: nn.Module,
    weights: str,
    result: Validation | None = None,
    extra_files: dict[str, Any] | None = None,
) -> None:
    """Write checkpoints/NAME from `model` (gathered on every rank under FSDP, written by the main rank)."""
    state = full_state_dict(model, trainer.runtime)
    if trainer.runtime.dist.is_main:
        save(
            trainer.model,
            trainer.checkpoint_dir / name,
            class_names=trainer.data.class_names,
            metadata=checkpoint_metadata(trainer, weights, result),
            extra_files=extra_files,
            state_dict=state,
        )


def save_last(trainer: Trainer) -> None:
    """Write checkpoints/last atomically: the weights and everything needed to resume from this exact point."""
    optimizer = full_optimizer_state(trainer.model, trainer.optimizer, trainer.runtime)  # every rank takes part
    extra = None
    if trainer.runtime.dist.is_main:
        objective = {k: v.detach().cpu() for k, v in trainer.objective.state_dict().items()}
        config = trainer.config.to_dict()
        extra = {STATE_FILE: training_state(trainer.state, optimizer, trainer.scaler, trainer.ema, objective, config)}
    save_weights(trainer, "last", trainer.model, "raw", extra_files=extra)


def recorded_attention(run_dir: Path) -> str | None:
    """The attention kernel the run chose when it started (a resumed run keeps it, for identical arithmetic)."""
    try:
        document = read_native_document(resolve_checkpoint_dir(run_dir / "checkpoints" / "last"))
    except (FileNotFoundError, ValueError, OSError):
        return None
    return ((document.get("metadata") or {}).get("runtime") or {}).get("attention")


def restore(trainer: Trainer) -> RunState:
    """Load weights and training state from RUN_DIR/checkpoints/last; every RNG is restored last."""
    last = resolve_checkpoint_dir(trainer.checkpoint_dir / "last")
    if not (last / STATE_FILE).is_file():
        raise MissingPathError(
            f"{trainer.run_dir} has no resumable checkpoint ({last / STATE_FILE} is missing): the run stopped before "
            "its first checkpoint; start it again without --resume (add --overwrite)"
        )
    _, weights, _ = read_native(last)
    state = load_training_state(last / STATE_FILE)
    load_full_state(trainer.model, trainer.optimizer, weights, state["optimizer"], trainer.runtime)
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.objective.load_state_dict(state.get("objective") or {})
    if trainer.ema is not None:
        if state["ema"] is None:
            raise UsageError(f"{last} was saved without EMA but the config enables it; the run cannot be resumed")
        trainer.ema.load_state_dict(state["ema"])
    progress = RunState(**state["progress"])
    if trainer.runtime.dist.enabled:
        # Each rank draws its own dropout; augmentation has its own (seed, step) stream (data/augment.py).
        seed_everything(rank_seed(trainer.config.run.seed, trainer.runtime.dist.rank, progress.step))
    else:
        restore_rng(state["rng"])
    log.info(
        "resuming %s at epoch %d, batch %d (step %d)",
        trainer.run_dir,
        progress.epoch + 1,
        progress.batch,
        progress.step,
    )
    return progress
