"""What a run tells its user: the opening lines (what trains on what, how the runtime was resolved) and summary.json.

`RunRecord` holds what the report needs that is fixed when the run starts (the data, the model's name and size,
the objective, the runtime); the run's counters (`RunState`) come with each summary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitkit.data import DatasetSplits
from vitkit.training.config import TrainConfig
from vitkit.training.progress import ProgressReporter
from vitkit.training.rundir import SUMMARY_FILE
from vitkit.training.runtime import Runtime, precision_warning
from vitkit.training.state import RunState


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """What the opening lines and summary.json say about a run besides its counters."""

    run_dir: Path
    runtime: Runtime
    data: DatasetSplits
    model_name: str  # the model's own config name, else the recipe's
    params: int
    objective_name: str
    best_metric: str

    def announce(
        self,
        reporter: ProgressReporter,
        config: TrainConfig,
        *,
        epochs: int,
        steps_per_epoch: int,
        warmup: int,
        total_steps: int,
    ) -> None:
        """Say what is trained on what, and how the runtime was resolved (and why)."""
        data, cfg, rt = self.data, config, self.runtime
        warning = precision_warning(rt.precision, rt.device)
        if warning:
            reporter.message(f"warning: {warning}")
        reporter.message(
            f"training {cfg.model.name} ({self.params / 1e6:.2f}M params, objective {self.objective_name}) on "
            f"{cfg.data.path}: {len(data.train)} train / {len(data.val)} val images, {len(data.class_names)} classes, "
            f"{cfg.data.img_size}px; {epochs} epochs x {steps_per_epoch} steps of "
            f"{cfg.run.batch_size}{f' (stopping at step {cfg.run.steps})' if cfg.run.steps else ''}; run dir "
            f"{self.run_dir}"
        )
        if warmup >= total_steps:
            reporter.message(
                f"warning: the warm-up ({warmup} steps) is not shorter than the run ({total_steps} steps), "
                "so the learning rate never decays; lower --warmup-steps"
            )
        processes = f", {rt.distributed} over {rt.dist.world_size} processes" if rt.dist.enabled else ""
        reporter.message(
            f"runtime: {rt.device}, {rt.precision} ({rt.precision_reason}), {rt.threads} thread"
            f"{'s' * (rt.threads > 1)}, attention {rt.attention_reason}{', compiled' if rt.compile else ''}{processes}"
        )

    def write_summary(self, state: RunState, status: str, error: str | None = None) -> dict[str, Any]:
        """RUN_DIR/summary.json: best and last scores, time, throughput, data-wait share, runtime, skipped files."""
        progress, scores, timers = state.progress, state.scores, state.timers
        checkpoints = self.run_dir / "checkpoints"
        summary: dict[str, Any] = {
            "status": status,
            "objective": self.objective_name,
            "best_metric": self.best_metric,
            "best_value": scores.best_value,
            **{f"val_{k}": v for k, v in scores.best_scores.items()},
            "best_epoch": scores.best_epoch,
            "best_weights": scores.best_weights,
            **{f"final_{k}": v for k, v in scores.last_eval.items()},
            "epochs": progress.epoch,
            "planned_epochs": progress.planned_epochs,
            "steps": progress.step,
            "wall_s": round(timers.elapsed_s, 2),
            "train_s": round(timers.train_s, 2),
            "train_images_per_s": round(progress.images / timers.train_s, 1) if timers.train_s else None,
            "data_wait_share": round(timers.data_wait_s / timers.train_s, 4) if timers.train_s else None,
            "augment_share": round(timers.augment_s / timers.train_s, 4) if timers.train_s else None,
            "train_images": len(self.data.train),
            "val_images": len(self.data.val),
            "num_classes": len(self.data.class_names),
            "skipped_files": [{"path": s.path, "reason": s.reason} for s in self.data.skipped],
            "model": self.model_name,
            "params": self.params,
            **self.runtime.describe(),
            "best_checkpoint": str(checkpoints / "best"),
            "last_checkpoint": str(checkpoints / "last"),
        }
        if error:
            summary["error"] = error
        if self.runtime.dist.is_main:
            (self.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        return summary
