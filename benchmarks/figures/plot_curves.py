"""Val top-1 against epochs and against minutes for any runs of `vitkit train`, from their metrics.csv.

    python benchmarks/figures/plot_curves.py OUT.png RUN_DIR[=LABEL] [RUN_DIR[=LABEL] ...] [--title TEXT] [--budget MIN]

Each RUN_DIR is a run directory (its metrics.csv holds one `epoch` row per validation); LABEL defaults to the
directory's name. `--budget` draws the time budget as a dotted line on the minutes panel.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vitkit.training.metrics import read_metrics  # noqa: E402


def epoch_rows(run: Path) -> list[dict[str, float]]:
    """Epoch, minutes and val top-1 of each epoch row of a run's metrics.csv."""
    rows = [row for row in read_metrics(run / "metrics.csv") if row["kind"] == "epoch"]
    return [{"epoch": int(r["epoch"]), "minutes": float(r["time_s"]) / 60, "top1": float(r["val_top1"])} for r in rows]


def parse_run(text: str) -> tuple[Path, str]:
    """RUN_DIR or RUN_DIR=LABEL."""
    path, _, label = text.partition("=")
    return Path(path), label or Path(path).name


def main() -> None:
    """Draw both panels, one line per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+", type=parse_run, metavar="RUN_DIR[=LABEL]")
    parser.add_argument("--title", default="CIFAR-10")
    parser.add_argument("--budget", type=float, help="the time budget in minutes (a dotted line)")
    args = parser.parse_args()
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for run, label in args.runs:
        if not (run / "metrics.csv").is_file():
            raise SystemExit(f"{run}/metrics.csv not found: give run directories of `vitkit train`")
        rows = epoch_rows(run)
        by_epoch.plot([r["epoch"] for r in rows], [r["top1"] for r in rows], marker=".", label=label)
        by_time.plot([r["minutes"] for r in rows], [r["top1"] for r in rows], marker=".", label=label)
    if args.budget:
        by_time.axvline(args.budget, color="grey", linestyle=":")
    by_epoch.set(xlabel="epoch", ylabel="val top-1 (%)", title=f"{args.title}: by epoch")
    by_time.set(xlabel="minutes (wall)", ylabel="val top-1 (%)", title=f"{args.title}: by time")
    for axis in (by_epoch, by_time):
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
