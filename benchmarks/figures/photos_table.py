"""The lever table of docs/photos.md from Imagenette run directories: one markdown row per run.

    python benchmarks/figures/photos_table.py RUN_DIR[=LABEL] [RUN_DIR[=LABEL] ...]

Each row: the label, parameters, epochs done, training images/s, data-wait share, minutes, best and last val
top-1 (from summary.json and metrics.csv). A run still going (no summary.json) shows its last finished epoch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vitkit.training.metrics import read_metrics


def row(run: Path, label: str) -> str:
    """One markdown row for `run`."""
    epochs = [r for r in read_metrics(run / "metrics.csv") if r["kind"] == "epoch"]
    steps = [r for r in read_metrics(run / "metrics.csv") if r["kind"] == "step"]
    summary_path = run / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        done, speed, wait = summary["epochs"], summary["train_images_per_s"], summary["data_wait_share"]
        minutes, status = summary["wall_s"] / 60, ""
    else:
        done, minutes, status = len(epochs), float(epochs[-1]["time_s"]) / 60 if epochs else 0.0, " (running)"
        speed = sum(float(r["images_per_s"]) for r in steps[-20:]) / max(len(steps[-20:]), 1)
        wait = sum(float(r["data_wait_share"]) for r in steps) / max(len(steps), 1)
    best = max((float(r["val_top1"]) for r in epochs), default=float("nan"))
    last = float(epochs[-1]["val_top1"]) if epochs else float("nan")
    return f"| {label}{status} | {done} | {speed:.0f} | {100 * wait:.1f}% | {minutes:.1f} | {last:.2f} | {best:.2f} |"


def main() -> None:
    """Print the header and one row per run."""
    print("| run | epochs | train img/s | data wait | minutes | val top-1 (last) | val top-1 (best) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for arg in sys.argv[1:]:
        path, _, label = arg.partition("=")
        print(row(Path(path), label or Path(path).name))


if __name__ == "__main__":
    main()
