"""Figures and tables of the reproduction report (docs/reproduction.md) from the runs of
benchmarks/experiments/reproduction.sh.

    .venv/bin/python benchmarks/figures/reproduction_figures.py [--runs runs/repro] [--out docs/figures]
        [--only NAME ...]

Reads each run's summary.json, metrics.csv and config.yaml (and, for the look inside the models, the analysis.json
that `vitkit analyze` wrote under RUNS/analysis/<run>/); writes one PNG per experiment, docs/figures/repro_<name>.png,
and prints the markdown tables. An experiment whose runs are missing is skipped with the names it lacks.
Training compute of a run = 3 x forward FLOPs of one image (vitkit's own count, as in `vitkit models`) x images
seen (optimizer steps x batch size): the paper's Fig. 5 axis, up to its constant.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import vitkit  # noqa: E402
from vitkit.analysis.embeddings import posemb_similarity  # noqa: E402
from vitkit.analysis.figures import mosaic  # noqa: E402
from vitkit.inference import evaluate_checkpoint  # noqa: E402
from vitkit.models.summary import summarize  # noqa: E402
from vitkit.training.config import read_recipe  # noqa: E402
from vitkit.training.metrics import read_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


class Missing(Exception):
    """An experiment's runs are not (all) there yet."""


class Runs:
    """The finished runs under one directory, read on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def dir(self, name: str) -> Path:
        """The run directory of `name` (a path outside `root` when it contains a slash)."""
        return REPO / name if "/" in name else self.root / name

    @functools.cache  # noqa: B019 (one Runs per invocation: the cache lives as long as the script)
    def summary(self, name: str) -> dict:
        """summary.json of a finished run; Missing when it is absent or unfinished."""
        path = self.dir(name) / "summary.json"
        if not path.exists():
            raise Missing(name)
        summary = json.loads(path.read_text())
        if summary.get("status") != "finished":
            raise Missing(f"{name} ({summary.get('status')})")
        return summary

    def epochs(self, name: str) -> list[dict]:
        """The epoch rows of metrics.csv, numbers as floats."""
        rows = [row for row in read_metrics(self.dir(name) / "metrics.csv") if row["kind"] == "epoch"]
        return [{k: float(v) for k, v in row.items() if k != "kind" and v != ""} for row in rows]

    def config(self, name: str) -> dict:
        """The run's recipe as it ran (config.yaml)."""
        return read_recipe(self.dir(name) / "config.yaml")

    def images_seen(self, name: str) -> int:
        """Training images the run's optimizer steps consumed."""
        config = self.config(name)
        return int(self.summary(name)["steps"] * config["run"]["batch_size"] * config["run"].get("grad_accum", 1))

    def train_pflops(self, name: str) -> float:
        """Training compute in PFLOPs: 3 x forward FLOPs per image x images seen."""
        images = self.images_seen(name)  # Missing first, when the run is not there
        model = vitkit.load(self.dir(name) / "checkpoints" / "best")
        return 3 * summarize(model.config).gflops * 1e9 * images / 1e15

    def analysis(self, name: str) -> dict:
        """analysis.json that `vitkit analyze` wrote for the run (reproduction.sh: analyze_models)."""
        path = self.root / "analysis" / name.replace("/", "_") / "analysis.json"
        if not path.exists():
            raise Missing(f"analysis of {name}")
        return json.loads(path.read_text())


def draw_posemb_similarity(axis: plt.Axes, run: Path, title: str):
    """Paper Fig. 7 (centre) of the run's best checkpoint on `axis`: one tile per patch position; returns the image."""
    similarity = posemb_similarity(vitkit.load(run / "checkpoints" / "best"))
    gh, gw = similarity.shape[:2]
    image = axis.imshow(mosaic(similarity.reshape(gh * gw, gh, gw), columns=gw), cmap="viridis", vmin=-1, vmax=1)
    axis.set_axis_off()
    axis.set_title(title, fontsize=9)
    return image


def save(figure: plt.Figure, out: Path, name: str) -> None:
    """Write docs/figures/repro_<name>.png."""
    path = out / f"repro_{name}.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    print(f"\nwrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def table(header: list[str], rows: list[list]) -> None:
    """Print a markdown table."""
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def pct(value: float) -> str:
    return f"{value:.1f}%"


# 1. Data hunger -------------------------------------------------------------------------------------------------
PERCENTS = (5, 10, 30, 100)


def data_hunger(runs: Runs, out: Path) -> None:
    """Val top-1 of the pure ViT and resnet20 against the number of training images, equal time per run."""
    figure, axis = plt.subplots(figsize=(5.5, 4))
    rows = []
    for model, label, marker in (("vit", "ViT (Mini/4, 1.2M)", "o"), ("resnet", "ResNet-20 (0.27M)", "s")):
        names = [f"hunger_{model}_{p}" for p in PERCENTS]
        summaries = [runs.summary(n) for n in names]
        sizes = [s["train_images"] for s in summaries]
        axis.plot(sizes, [s["val_top1"] for s in summaries], marker=marker, label=label)
        for p, s in zip(PERCENTS, summaries, strict=True):
            rows.append([label, f"{p}% ({s['train_images']:,})", pct(s["val_top1"]), s["epochs"],
                         f"{s['train_images_per_s']:.0f}", f"{s['wall_s'] / 60:.1f}"])  # fmt: skip
    axis.set_xscale("log")
    axis.minorticks_off()
    axis.set_xticks(sizes, [f"{size:,}\n({p}%)" for size, p in zip(sizes, PERCENTS, strict=True)])
    axis.set_xlabel("CIFAR-10 training images (log)")
    axis.set_ylabel("val top-1 (%)")
    axis.set_title("Data hunger: equal time per run (5 min, 1 thread)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend()
    save(figure, out, "data_hunger")
    table(["model", "training labels", "val top-1", "epochs", "train images/s", "minutes"], rows)


# 2 and 6. Accuracy against training compute -----------------------------------------------------------------------
def compute_plot(runs: Runs, out: Path, name: str, title: str, groups: dict[str, list[tuple[str, str]]]) -> None:
    """Val top-1 against training PFLOPs, one marker series per group of (run, label)."""
    figure, axis = plt.subplots(figsize=(6, 4.2))
    rows = []
    for (group, members), marker in zip(groups.items(), "os^Dv", strict=False):
        points = [(runs.train_pflops(run), runs.summary(run)["val_top1"], label, run) for run, label in members]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker=marker, linestyle=":", label=group)
        for flops, top1, label, run in points:
            if not label:
                continue  # a point repeated in another series
            axis.annotate(label, (flops, top1), textcoords="offset points", xytext=(4, 3), fontsize=7)
            summary = runs.summary(run)
            rows.append([group, label, f"{summary['params'] / 1e6:.2f}M", f"{flops:.2f}", pct(top1), summary["epochs"],
                         f"{summary['train_images_per_s']:.0f}"])  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("training compute (PFLOPs, log)")
    axis.set_ylabel("val top-1 (%)")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save(figure, out, name)
    table(["family", "model", "params", "train PFLOPs", "val top-1", "epochs", "train images/s"], rows)


def hybrids(runs: Runs, out: Path) -> None:
    """Pure ViT against the two hybrids at two widths, 5 minutes each (paper Fig. 5 in miniature)."""
    groups = {
        "pure ViT (4x4 patches)": [("posemb_learned_s0", "D=128"), ("scale_wide", "D=256")],
        "hybrid, ResNet stem (C20)": [("hybrid_C20_base", "D=128"), ("hybrid_C20_wide", "D=256")],
        "hybrid, CCT tokenizer (cct2)": [("hybrid_cct2_base", "D=128"), ("hybrid_cct2_wide", "D=256")],
    }
    compute_plot(runs, out, "hybrids", "Hybrids vs pure ViT, equal time (5 min, 30% of CIFAR-10)", groups)


def scaling(runs: Runs, out: Path) -> None:
    """Depth, width and patch size changed one at a time from the base model, equal time."""
    base = ("posemb_learned_s0", "")  # drawn in every series, labelled once
    groups = {
        "base 6x128, 4x4 patches (2 seeds)": [("posemb_learned_s0", "base"), ("posemb_learned_s1", "")],
        "depth: 6 -> 12 blocks": [base, ("scale_deep", "12 blocks")],
        "width: D 128 -> 256": [base, ("scale_wide", "D=256")],
        "patch size: 8, 4, 2": [("scale_patch8", "8x8 patches"), base, ("scale_patch2", "2x2 patches")],
    }
    compute_plot(runs, out, "scaling", "Depth, width, patch size at equal time (5 min, 30% of CIFAR-10)", groups)


# 3. Position embeddings --------------------------------------------------------------------------------------------
POSEMBS = {"none": "none", "learned": "learned 1D", "learned_2d": "learned 2D", "sincos_2d": "sin-cos 2D"}


def position_embeddings(runs: Runs, out: Path) -> None:
    """Val top-1 per position embedding (two seeds) and the E_pos similarity of the seed-0 models."""
    results = {kind: [runs.summary(f"posemb_{kind}_s{seed}")["val_top1"] for seed in (0, 1)] for kind in POSEMBS}
    figure = plt.figure(figsize=(13, 3.6))
    grid = figure.add_gridspec(1, 4, width_ratios=[1.3, 1, 1, 1])
    axis = figure.add_subplot(grid[0])
    for index, values in enumerate(results.values()):
        axis.bar(index, statistics.mean(values), color="C0", alpha=0.5)
        axis.scatter([index] * len(values), values, color="C0", zorder=3, s=14)
    axis.set_xticks(range(len(POSEMBS)), list(POSEMBS.values()), fontsize=8)
    low = min(min(v) for v in results.values())
    axis.set_ylim(low - 3, max(max(v) for v in results.values()) + 1)
    axis.set_ylabel("val top-1 (%), bar = mean, dots = seeds")
    axis.set_title("Position embeddings", fontsize=10)
    for column, kind in enumerate(("learned", "learned_2d", "sincos_2d"), start=1):
        panel = figure.add_subplot(grid[column])
        image = draw_posemb_similarity(panel, runs.dir(f"posemb_{kind}_s0"), f"E_pos similarity: {POSEMBS[kind]}")
    figure.colorbar(image, ax=figure.axes[1:], fraction=0.02, label="cosine")
    save(figure, out, "posemb")
    rows = [[POSEMBS[k], pct(v[0]), pct(v[1]), pct(statistics.mean(v)), f"{abs(v[0] - v[1]):.1f}"]
            for k, v in results.items()]  # fmt: skip
    table(["position embedding", "seed 0", "seed 1", "mean", "spread"], rows)


# 4. AugReg ---------------------------------------------------------------------------------------------------------
def augreg(runs: Runs, out: Path) -> None:
    """Plain vs augmented + regularised, at a short (2-epoch) and a long (60-min, ~34-epoch) budget."""
    arms = {
        "short": ("augreg_short_plain", "augreg_short_reg"),
        "long": ("runs/cifar10_60min", "runs/cifar10_60min_reg"),
    }
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), width_ratios=[1, 1.6])
    rows = []
    for index, (budget, (plain, regularised)) in enumerate(arms.items()):
        for offset, (run, label) in enumerate(((plain, "plain"), (regularised, "RandAugment + stoch. depth"))):
            summary = runs.summary(run)
            axes[0].bar(index + 0.38 * (offset - 0.5), summary["val_top1"], width=0.36, color=f"C{offset}",
                        label=label if index == 0 else None)  # fmt: skip
            axes[0].text(index + 0.38 * (offset - 0.5), summary["val_top1"] + 0.3, f"{summary['val_top1']:.1f}",
                         ha="center", fontsize=8)  # fmt: skip
            rows.append([budget, label, summary["epochs"], pct(summary["val_top1"]), f"{summary['wall_s'] / 60:.1f}"])
            if budget == "long":
                epochs = runs.epochs(run)
                axes[1].plot([e["epoch"] for e in epochs], [e["val_top1"] for e in epochs], color=f"C{offset}",
                             label=f"{label}: val")  # fmt: skip
                axes[1].plot([e["epoch"] for e in epochs], [e["acc"] for e in epochs], color=f"C{offset}",
                             linestyle="--", label=f"{label}: train (augmented)")  # fmt: skip
    axes[0].set_xticks([0, 1], ["short: 2 epochs", "long: 60 min\n(33-34 epochs)"])
    axes[0].set_ylim(min(r for r in [float(row[3][:-1]) for row in rows]) - 5, 90)
    axes[0].set_ylabel("val top-1 (%)")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[0].set_title("AugReg at a short and a long budget", fontsize=10)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("top-1 (%)")
    axes[1].set_title("The long runs: train vs val", fontsize=10)
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    save(figure, out, "augreg")
    table(["budget", "arm", "epochs", "val top-1", "minutes"], rows)


# 5. DeiT -----------------------------------------------------------------------------------------------------------
STUDENTS = {  # run: (label, colour, line style); light augmentation (pad-crop, flip) unless "strong"
    "deit_plain": ("no distillation", "C0", "-"),
    "deit_hard": ("hard, distillation token", "C1", "-"),
    "deit_hard_cls": ("hard, through the class token", "C2", "-"),
    "deit_soft": ("soft (tau 3), distillation token", "C3", "-"),
    "deit_plain_aug": ("strong aug., 30 epochs, no distillation", "C0", "--"),
    "deit_hard_aug": ("strong aug., 30 epochs, hard, distillation token", "C1", "--"),
    "deit_plain_aug100": ("strong aug., 100 epochs, no distillation", "C0", ":"),
    "deit_hard_aug100": ("strong aug., 100 epochs, hard, distillation token", "C1", ":"),
}


def val_predictions(run: Path, data: str) -> torch.Tensor:
    """Top-1 class of every val image by the run's best checkpoint (a DeiT student: its averaged heads)."""
    return evaluate_checkpoint(str(run), data, keep_logits=True, device="cpu").result.logits.argmax(1)


def deit(runs: Runs, out: Path, data: str) -> None:
    """Val top-1 by epoch of the students at equal steps, each head, their agreement with the teacher, and the
    second seeds of the light-augmentation students where those runs exist."""
    teacher = runs.summary("teacher_10pct")
    teacher_predictions = val_predictions(runs.dir("teacher_10pct"), data)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True, layout="constrained")
    rows = []
    for run, (label, colour, style) in STUDENTS.items():
        summary, epochs = runs.summary(run), runs.epochs(run)
        axis = axes[1 if label.startswith("strong") else 0]
        axis.plot([e["epoch"] for e in epochs], [e["val_top1"] for e in epochs], color=colour, linestyle=style,
                  label=label.removeprefix("strong aug., "))  # fmt: skip
        last = epochs[-1]
        heads = [pct(last[k]) if k in last else "-" for k in ("val_top1_cls", "val_top1_dist")]
        agree = float((val_predictions(runs.dir(run), data) == teacher_predictions).float().mean()) * 100
        rows.append([label, pct(summary["final_val_top1"]), *heads, pct(summary["val_top1"]), f"{agree:.1f}%",
                     f"{summary['train_s'] / 60:.1f}"])  # fmt: skip
    titles = ("light augmentation (pad-crop, flip), 30 epochs", "strong augmentation (RandAugment, Mixup, CutMix)")
    teacher_label = f"vgg8 teacher ({teacher['val_top1']:.1f}%)"
    for axis, title in zip(axes, titles, strict=True):
        axis.axhline(teacher["val_top1"], color="grey", linestyle="--", label=teacher_label)
        axis.set_xlabel("epoch (4,500 images = 10% of CIFAR-10's labels)")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0].set_ylabel("val top-1 (%)")
    figure.suptitle("DeiT distillation on 10% of the labels, equal student steps", fontsize=11)
    save(figure, out, "deit")
    table(["student", "final val top-1 (heads averaged)", "class head", "distillation head", "best epoch's val top-1",
           "agreement with the teacher (val)", "training minutes"], rows)  # fmt: skip
    print(f"\nteacher: vgg8, {pct(teacher['val_top1'])} val, {teacher['train_s'] / 60:.1f} min training, 1 thread")
    seeds = []
    for run in ("deit_plain", "deit_hard", "deit_hard_cls", "deit_soft"):
        with contextlib.suppress(Missing):
            summaries = [runs.summary(name) for name in (run, f"{run}_s1")]
            best, final = [s["val_top1"] for s in summaries], [s["final_val_top1"] for s in summaries]
            seeds.append([STUDENTS[run][0], *(f"{b:.1f} / {f:.1f}" for b, f in zip(best, final, strict=True)),
                          f"{np.mean(best):.2f} / {np.mean(final):.2f}", f"{abs(best[0] - best[1]):.1f}"])  # fmt: skip
    if seeds:
        table(["light augmentation", "seed 0: best / final", "seed 1: best / final", "mean: best / final",
               "spread of best (points)"], seeds)  # fmt: skip


# 7. Inside the models ----------------------------------------------------------------------------------------------
INSIDE = {
    "posemb_learned_s0": "pure ViT",
    "hybrid_C20_base": "hybrid (ResNet stem)",
    "deit_hard": "DeiT student (hard)",
    "mpp": "masked patch prediction",
}


def inside(runs: Runs, out: Path) -> None:
    """Mean attention distance per head and layer (Fig. 7 right / Fig. 11) and E_pos similarity, side by side."""
    documents = {name: runs.analysis(name) for name in INSIDE}
    figure, axes = plt.subplots(2, len(INSIDE), figsize=(3.3 * len(INSIDE), 7), layout="constrained")
    rows = []
    for column, (name, label) in enumerate(INSIDE.items()):
        document = documents[name]
        distance = np.array(document["mean_attention_distance"])
        layers = np.arange(1, len(distance) + 1)
        for head in range(distance.shape[1]):
            axes[0, column].scatter(layers, distance[:, head], s=12)
        axes[0, column].set_ylim(0, 32)
        axes[0, column].set_title(label, fontsize=10)
        axes[0, column].set_xlabel("layer")
        if column == 0:
            axes[0, column].set_ylabel("mean attention distance (px)")
        draw_posemb_similarity(axes[1, column], runs.dir(name), "E_pos similarity")
        rows.append([label, f"{distance[0].min():.1f}-{distance[0].max():.1f}",
                     f"{distance[-1].min():.1f}-{distance[-1].max():.1f}", f"{distance.mean():.1f}",
                     f"{document['posemb_similarity']['same_row_or_col']:.2f} / "
                     f"{document['posemb_similarity']['other']:.2f}"])  # fmt: skip
    save(figure, out, "inside")
    table(["model", "layer 1 heads (px)", "last layer heads (px)", "mean (px)",
           "E_pos cosine: same row/col / other"], rows)  # fmt: skip


EXPERIMENTS: dict[str, Callable[..., None]] = {
    "data_hunger": data_hunger,
    "hybrids": hybrids,
    "posemb": position_embeddings,
    "augreg": augreg,
    "deit": deit,
    "scaling": scaling,
    "inside": inside,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "repro")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS), help="these experiments only")
    args = parser.parse_args()
    runs = Runs(args.runs)
    for name in args.only or EXPERIMENTS:
        print(f"\n## {name}")
        try:
            if name == "deit":
                deit(runs, args.out, args.data)
            else:
                EXPERIMENTS[name](runs, args.out)
        except Missing as missing:
            print(f"skipped: {missing} not there yet")


if __name__ == "__main__":
    main()
