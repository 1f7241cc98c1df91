"""A run's checkpoints: `last` (weights + everything to resume), `best` (by the objective's metric) and `ema`.

Every checkpoint is a native vitkit directory (config.json + model.safetensors, written atomically) whose
metadata records what `vitkit.inference` needs to use it with no extra flags: class names, the resolution
and normalisation it was trained with, the precision, and the whole recipe. Under FSDP the weights and the
optimizer state are gathered to full tensors first, so a checkpoint loads on any number of processes.

`CheckpointWriter` holds what every checkpoint of a run shares (where, the model, its class names, the recipe,
the runtime); the run's position and scores (`RunState`) and the parts to resume come with each call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitkit.checkpoints import save
from vitkit.checkpoints.native import read_native, read_native_document, resolve_checkpoint_dir
from vitkit.errors import MissingPathError, UsageError
from vitkit.training.config import TrainConfig
from vitkit.training.distributed import full_optimizer_state, full_state_dict, load_full_state
from vitkit.training.ema import ModelEma
from vitkit.training.objectives import Objective, Validation
from vitkit.training.runtime import Runtime
from vitkit.training.state import (
    STATE_FILE,
    Progress,
    RunState,
    load_training_state,
    rank_seed,
    restore_rng,
    seed_everything,
    training_state,
)

log = logging.getLogger("vitkit.training")


@dataclass(frozen=True, kw_only=True)
class CheckpointWriter:
    """Writes and reads back RUN_DIR/checkpoints/{last,best,ema} of one run."""

    run_dir: Path
    runtime: Runtime
    model: nn.Module  # the bare model: its architecture is saved, with weights from it or its EMA copy
    class_names: list[str]
    config: TrainConfig  # the recipe, recorded in every checkpoint
    objective_name: str

    @property
    def directory(self) -> Path:
        """RUN_DIR/checkpoints."""
        return self.run_dir / "checkpoints"

    def metadata(self, progress: Progress, weights: str, result: Validation | None = None) -> dict[str, Any]:
        """What a checkpoint records besides the weights: position, scores, and the data settings inference needs."""
        data = self.config.data
        meta = {
            "epoch": progress.epoch,
            "step": progress.step,
            "weights": weights,
            "objective": self.objective_name,
            "precision": self.runtime.precision,
            "runtime": self.runtime.describe(),
            "data": {
                "path": data.path,
                "absolute_path": str(Path(data.path).resolve()) if data.path != "digits" else data.path,
                "img_size": data.eval_img_size or data.img_size,  # what inference feeds (FixRes: above training's)
                "train_img_size": data.img_size,
                "mean": list(data.mean),
                "std": list(data.std),
                "val_fraction": data.val_fraction,
                "seed": data.seed,
            },
            "training": self.config.to_dict(),
        }
        if result is not None:
            meta.update({f"val_{key}": value for key, value in result.values.items()})
        return meta

    def save_weights(
        self,
        name: str,
        model: nn.Module,
        weights: str,
        progress: Progress,
        result: Validation | None = None,
        extra_files: dict[str, Any] | None = None,
    ) -> None:
        """Write checkpoints/NAME from `model` (gathered on every rank under FSDP, written by the main rank)."""
        state = full_state_dict(model, self.runtime)
        if self.runtime.dist.is_main:
            save(
                self.model,
                self.directory / name,
                class_names=self.class_names,
                metadata=self.metadata(progress, weights, result),
                extra_files=extra_files,
                state_dict=state,
            )

    def save_last(
        self,
        state: RunState,
        *,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        ema: ModelEma | None,
        objective: Objective,
    ) -> None:
        """Write checkpoints/last atomically: the weights and everything needed to resume from this exact point."""
        optimizer_state = full_optimizer_state(self.model, optimizer, self.runtime)  # every rank takes part
        extra = None
        if self.runtime.dist.is_main:
            objective_state = {k: v.detach().cpu() for k, v in objective.state_dict().items()}
            saved = training_state(state, optimizer_state, scaler, ema, objective_state, self.config.to_dict())
            extra = {STATE_FILE: saved}
        self.save_weights("last", self.model, "raw", state.progress, extra_files=extra)

    def restore(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        ema: ModelEma | None,
        objective: Objective,
    ) -> RunState:
        """Load weights and training state from RUN_DIR/checkpoints/last; every RNG is restored last."""
        last = resolve_checkpoint_dir(self.directory / "last")
        if not (last / STATE_FILE).is_file():
            raise MissingPathError(
                f"{self.run_dir} has no resumable checkpoint ({last / STATE_FILE} is missing): the run stopped before "
                "its first checkpoint; start it again without --resume (add --overwrite)"
            )
        _, weights, _ = read_native(last)
        state = load_training_state(last / STATE_FILE)
        load_full_state(self.model, optimizer, weights, state["optimizer"], self.runtime)
        scaler.load_state_dict(state["scaler"])
        objective.load_state_dict(state.get("objective") or {})
        if ema is not None:
            if state["ema"] is None:
                raise UsageError(f"{last} was saved without EMA but the config enables it; the run cannot be resumed")
            ema.load_state_dict(state["ema"])
        run_state = RunState.from_dict(state)
        progress = run_state.progress
        if self.runtime.dist.enabled:
            # Each rank draws its own dropout; augmentation has its own (seed, step) stream (data/augment.py).
            seed_everything(rank_seed(self.config.run.seed, self.runtime.dist.rank, progress.step))
        else:
            restore_rng(state["rng"])
        log.info(
            "resuming %s at epoch %d, batch %d (step %d)",
            self.run_dir,
            progress.epoch + 1,
            progress.batch,
            progress.step,
        )
        return run_state


def recorded_attention(run_dir: Path) -> str | None:
    """The attention kernel the run chose when it started (a resumed run keeps it, for identical arithmetic)."""
    try:
        document = read_native_document(resolve_checkpoint_dir(run_dir / "checkpoints" / "last"))
    except (FileNotFoundError, ValueError, OSError):
        return None
    return ((document.get("metadata") or {}).get("runtime") or {}).get("attention")
