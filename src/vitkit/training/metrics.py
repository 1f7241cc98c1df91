"""Run metrics: one CSV row per optimizer step and per epoch, TensorBoard events when available, and curves.png."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("vitkit.training")

BASE_COLUMNS = ["kind", "epoch", "step", "time_s", "lr"]  # kind: "step" or "epoch"; epoch is 1-based
STEP_COLUMNS = ["grad_norm", "images_per_s", "data_wait_share"]


def metric_columns(train_metrics: list[str], val_metrics: list[str]) -> list[str]:
    """The CSV columns for an objective's training and validation metrics (raw and EMA weights)."""
    validation = [f"val_{name}" for name in val_metrics] + [f"ema_val_{name}" for name in val_metrics]
    return BASE_COLUMNS + list(train_metrics) + STEP_COLUMNS + validation


COLUMNS = metric_columns(["loss", "acc"], ["loss", "top1", "top5"])  # the supervised objective's


class MetricsLog:
    """Appends rows to `metrics.csv` (and TensorBoard when `tensorboard` is installed).

    `keep_rows` is the number of rows the checkpoint being resumed had seen (0 for a new run): the file is cut
    back to exactly those, so a killed run leaves no duplicate, orphan or half-written row.
    """

    def __init__(
        self, run_dir: Path, keep_rows: int = 0, resume_step: int = 0, columns: list[str] | None = None
    ) -> None:
        self.path = run_dir / "metrics.csv"
        self.columns = columns or COLUMNS
        kept = read_metrics(self.path)[:keep_rows] if keep_rows and self.path.exists() else []
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
        self.rows = len(kept)
        self.handle = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self.writer = csv.DictWriter(self.handle, fieldnames=self.columns)
        self.tensorboard = _tensorboard_writer(run_dir, resume_step)

    def write(self, kind: str, **values: Any) -> None:
        """Append one row; absent columns stay empty."""
        row = {"kind": kind, **{k: _format(v) for k, v in values.items()}}
        self.writer.writerow(row)
        self.rows += 1
        if self.tensorboard is not None:
            for key, value in values.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"{kind}/{key}", value, values["step"])

    def flush(self) -> None:
        """Push rows to disk (called at checkpoints and epoch ends)."""
        self.handle.flush()
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        """Flush and close the files."""
        self.flush()
        self.handle.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _format(value: Any) -> Any:
    """Floats with 6 significant digits; everything else as is."""
    return f"{value:.6g}" if isinstance(value, float) else value


def _tensorboard_writer(run_dir: Path, purge_step: int) -> Any:
    """A SummaryWriter under RUN_DIR/tensorboard, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step or None)


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The rows of a metrics.csv."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _column(rows: list[dict[str, str]], x: str, y: str) -> tuple[list[float], list[float]]:
    """The (x, y) pairs of rows where y is filled in and finite."""
    xs, ys = [], []
    for row in rows:
        if row.get(y) not in (None, ""):
            value = float(row[y])
            if math.isfinite(value):
                xs.append(float(row[x]))
                ys.append(value)
    return xs, ys


def plot_curves(metrics_path: str | Path, out_path: str | Path) -> Path:
    """Loss and accuracy against epochs (train per step, smoothed; validation per epoch) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    steps = [r for r in rows if r["kind"] == "step"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    steps_per_epoch = _steps_per_epoch(epochs)
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(11, 4))
    xs, ys = _column(steps, "step", "loss")
    if xs:
        loss_axis.plot([x / steps_per_epoch for x in xs], _smooth(ys), label="train (per step, smoothed)", alpha=0.8)
    for key, label in (("loss", "train (epoch mean)"), ("val_loss", "val"), ("ema_val_loss", "val, EMA weights")):
        xs, ys = _column(epochs, "epoch", key)
        if xs:
            loss_axis.plot(xs, ys, marker="o", markersize=3, label=label)
    for key, label in (
        ("acc", "train top-1 (epoch)"),
        ("val_top1", "val top-1"),
        ("val_top5", "val top-5"),
        ("ema_val_top1", "val top-1, EMA weights"),
    ):
        xs, ys = _column(epochs, "epoch", key)
        if xs:
            acc_axis.plot(xs, ys, marker="o", markersize=3, label=label)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_axis.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for axis in (loss_axis, acc_axis):
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out_path, dpi=100)
    plt.close(figure)
    return Path(out_path)


def _steps_per_epoch(epochs: list[dict[str, str]]) -> float:
    """Optimizer steps per epoch, from the first epoch row (1 when there is none yet)."""
    if not epochs:
        return 1.0
    first = epochs[0]
    return max(1.0, float(first["step"]) / float(first["epoch"]))


def _smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """An exponential moving average (bias-corrected), as TensorBoard smooths curves."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out
