"""What a run tells its user: the opening lines (what trains on what, how the runtime was resolved) and summary.json."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from vitkit.training.progress import ProgressReporter
from vitkit.training.rundir import SUMMARY_FILE
from vitkit.training.runtime import precision_warning

if TYPE_CHECKING:
    from vitkit.training.trainer import Trainer


def announce(trainer: Trainer, reporter: ProgressReporter) -> None:
    """Say what is trained on what, and how the runtime was resolved (and why)."""
    data, cfg, rt = trainer.data, trainer.config, trainer.runtime
    warning = precision_warning(rt.precision, rt.device)
    if warning:
        reporter.message(f"warning: {warning}")
    params = sum(p.numel() for p in trainer.model.parameters())
    reporter.message(
        f"training {cfg.model.name} ({params / 1e6:.2f}M params, objective {trainer.objective.name}) on "
        f"{cfg.data.path}: {len(data.train)} train / {len(data.val)} val images, {len(data.class_names)} classes, "
        f"{cfg.data.img_size}px; {trainer.state.planned_epochs} epochs x {trainer.steps_per_epoch} steps of "
        f"{cfg.run.batch_size}{f' (stopping at step {cfg.run.steps})' if cfg.run.steps else ''}; run dir "
        f"{trainer.run_dir}"
    )
    if trainer.warmup >= trainer.total_steps:
        reporter.message(
            f"warning: the warm-up ({trainer.warmup} steps) is not shorter than the run ({trainer.total_steps} steps), "
            "so the learning rate never decays; lower --warmup-steps"
        )
    processes = f", {rt.distributed} over {rt.dist.world_size} processes" if rt.dist.enabled else ""
    reporter.message(
        f"runtime: {rt.device}, {rt.precision} ({rt.precision_reason}), {rt.threads} thread"
        f"{'s' * (rt.threads > 1)}, attention {rt.attention_reason}{', compiled' if rt.compile else ''}{processes}"
    )


def write_summary(trainer: Trainer, status: str, error: str | None = None) -> dict[str, Any]:
    """RUN_DIR/summary.json: best and last scores, time, throughput, data-wait share, runtime, skipped files."""
    state, cfg, objective = trainer.state, trainer.config, trainer.objective
    summary: dict[str, Any] = {
        "status": status,
        "objective": objective.name,
        "best_metric": objective.best_metric,
        "best_value": state.best_value,
        **{f"val_{k}": v for k, v in state.best_scores.items()},
        "best_epoch": state.best_epoch,
        "best_weights": state.best_weights,
        **{f"final_{k}": v for k, v in state.last_eval.items()},
        "epochs": state.epoch,
        "planned_epochs": state.planned_epochs,
        "steps": state.step,
        "wall_s": round(state.elapsed_s, 2),
        "train_s": round(state.train_s, 2),
        "train_images_per_s": round(state.images / state.train_s, 1) if state.train_s else None,
        "data_wait_share": round(state.data_wait_s / state.train_s, 4) if state.train_s else None,
        "augment_share": round(state.augment_s / state.train_s, 4) if state.train_s else None,
        "train_images": len(trainer.data.train),
        "val_images": len(trainer.data.val),
        "num_classes": len(trainer.data.class_names),
        "skipped_files": [{"path": s.path, "reason": s.reason} for s in trainer.data.skipped],
        "model": getattr(trainer.model.config, "name", "") or cfg.model.name,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        **trainer.runtime.describe(),
        "best_checkpoint": str(trainer.checkpoint_dir / "best"),
        "last_checkpoint": str(trainer.checkpoint_dir / "last"),
    }
    if error:
        summary["error"] = error
    if trainer.runtime.dist.is_main:
        (trainer.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
