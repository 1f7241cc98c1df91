"""The lever table of docs/photos.md from Imagenette run directories: one markdown row per run.

    python benchmarks/figures/photos_table.py RUN_DIR[=LABEL] [RUN_DIR[=LABEL] ...]

Each row: the label, parameters, epochs done, training images/s, data-wait share, minutes, last and best val
top-1 (from summary.json and metrics.csv), and val top-1 of the last checkpoint evaluated at 160 px when
RUN_DIR/fixres_160.json holds a `vitkit eval --json` result at that size. A run still going (no summary.json)
shows its last finished epoch.
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
    summary_path, params = run / "summary.json", "-"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        done, speed, wait = summary["epochs"], summary["train_images_per_s"], summary["data_wait_share"]
        minutes, status, params = summary["wall_s"] / 60, "", f"{summary['params'] / 1e6:.2f}M"
    else:
        done, minutes, status = len(epochs), float(epochs[-1]["time_s"]) / 60 if epochs else 0.0, " (running)"
        speed = sum(float(r["images_per_s"]) for r in steps[-20:]) / max(len(steps[-20:]), 1)
        wait = sum(float(r["data_wait_share"]) for r in steps) / max(len(steps), 1)
    best = max((float(r["val_top1"]) for r in epochs), default=float("nan"))
    last = float(epochs[-1]["val_top1"]) if epochs else float("nan")
    fixres = run / "fixres_160.json"
    at_160 = f"{json.loads(fixres.read_text())['top1']:.2f}" if fixres.is_file() else "-"
    return (
        f"| {label}{status} | {params} | {done} | {speed:.0f} | {100 * wait:.1f}% | {minutes:.1f} | {last:.2f} "
        f"| {best:.2f} | {at_160} |"
    )


def main() -> None:
    """Print the header and one row per run."""
    print(
        "| run | parameters | epochs | train images/s | data wait | minutes | val top-1 (last) | val top-1 (best) "
        "| last at 160 px |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for arg in sys.argv[1:]:
        path, _, label = arg.partition("=")
        print(row(Path(path), label or Path(path).name))


if __name__ == "__main__":
    main()
