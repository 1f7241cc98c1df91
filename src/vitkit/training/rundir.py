"""The run directory: refusing one in use, preparing it, and reading back the config of a run to resume."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from vitkit.errors import MissingPathError, UsageError
from vitkit.training.config import TrainConfig, load_config

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
# Flags that may differ when resuming: they change where and how fast the run goes, not what it computes.
RESUME_OVERRIDABLE = (
    "run.log_every",
    "data.num_workers",
    "data.cache_dir",
    "runtime.device",
    "runtime.threads",
    "runtime.attention",
    "runtime.compile",
    "runtime.distributed",
    "runtime.activation_checkpointing",
)


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The config of the run being resumed, with only the harmless overrides allowed."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise MissingPathError(f"{run_dir} is not a training run ({CONFIG_FILE} is missing); check the --resume path")
    refused = sorted(set(overrides) - set(RESUME_OVERRIDABLE))
    if refused:
        raise UsageError(
            f"--resume continues the run exactly as configured in {run_dir / CONFIG_FILE}; these options would change "
            f"it: {', '.join(refused)}. Drop them, or start a new run with --config {run_dir / CONFIG_FILE}"
        )
    return load_config(run_dir / CONFIG_FILE, overrides)


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse an output directory that holds something, unless it is a run and `overwrite` is set."""
    if run_dir.exists() and any(run_dir.iterdir()):
        is_run = (run_dir / CONFIG_FILE).exists() or (run_dir / "checkpoints").exists()
        if not overwrite or not is_run:
            hint = "pass --overwrite to replace it, " if is_run else ""
            raise UsageError(
                f"output directory {run_dir} already exists and is not empty; {hint}"
                f"use --resume {run_dir} to continue it, or choose another --out"
            )


def prepare_run_dir(run_dir: Path, overwrite: bool, config: TrainConfig) -> None:
    """Create the run directory (replacing an earlier run when `overwrite`) and write the resolved recipe."""
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(config.to_yaml())
