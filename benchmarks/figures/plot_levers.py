"""docs/figures/levers.png: val top-1 against epochs (the lever ablation) and against minutes (the 30-minute recipe
beside the CCT script), from the runs of benchmarks/experiments/levers_ablation.sh.

    python benchmarks/figures/plot_levers.py runs/levers [docs/figures/levers.png]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vitkit.training.metrics import read_metrics  # noqa: E402

ARMS = {"base": "baseline (patchify)", "mimetic": "+ mimetic init", "muon": "+ Muon", "cct2": "+ CCT tokenizer"}
CCT_EPOCH = re.compile(r"^\[Epoch (\d+)\]\s+Top-1\s+([\d.]+)\s+Time:\s+([\d.]+)")


def epoch_rows(run: Path) -> list[dict[str, float]]:
    """Epoch, minutes and val top-1 of each epoch row of a run's metrics.csv."""
    rows = [row for row in read_metrics(run / "metrics.csv") if row["kind"] == "epoch"]
    return [{"epoch": int(r["epoch"]), "minutes": float(r["time_s"]) / 60, "top1": float(r["val_top1"])} for r in rows]


def main(root: Path, out: Path) -> None:
    """Draw both panels from the runs under `root`."""
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for name, label in ARMS.items():
        if (root / name / "metrics.csv").exists():
            rows = epoch_rows(root / name)
            by_epoch.plot([r["epoch"] for r in rows], [r["top1"] for r in rows], marker="o", label=label)
    by_epoch.set(xlabel="epoch", ylabel="CIFAR-10 val top-1 (%)", title="each lever, equal epochs (1 thread)")
    by_epoch.legend()
    vitkit_run = root / "final30_vitkit"
    if (vitkit_run / "metrics.csv").exists():
        rows = epoch_rows(vitkit_run)
        by_time.plot([r["minutes"] for r in rows], [r["top1"] for r in rows], marker="o",
                     label="vitkit recipes/cifar10_30min.yaml")  # fmt: skip
    cct_log = root / "final30_cct.log"
    if cct_log.exists():
        points = [CCT_EPOCH.match(line) for line in cct_log.read_text().splitlines()]
        points = [(float(m[3]), float(m[2])) for m in points if m]
        by_time.plot(*zip(*points, strict=True), marker="s", label="CCT repository script (cct_2, 3x2)")
    by_time.axvline(30, color="grey", linestyle=":")
    by_time.set(
        xlabel="minutes", ylabel="CIFAR-10 val top-1 (%)", title="30-minute budget, side by side (1 thread each)"
    )
    by_time.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "docs/figures/levers.png"))
