"""`vitkit train` as a new user runs it: no precision or thread flags. Images/s, share of the bf16 matmul peak, profile.

The command is the issue's: ViT-Ti with 4x4 patches at 32x32 on a 5,000-image CIFAR-10 folder (the val split of
../shared/data/cifar10, of which the seeded 90% train), batch 128, one epoch (plus `--epochs 2` to skip the first
epoch's warm-up), RandAugment 2/9 as timm's default. Then a torch.profiler table of a few bare training steps,
grouped by what the time goes to (matmuls, attention, LayerNorm, GELU, softmax, copies, optimizer, ...).

    .venv/bin/python benchmarks/speed/train_defaults.py [--data ../shared/data/cifar10/val] [--epochs 2] [--compile]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak_tflops  # noqa: E402
from vitkit import create_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# Which profiler ops belong to which kind of work (first match wins; the rest is "other").
GROUPS = [
    ("matmul (linear, bmm)", ("addmm", "mm", "bmm", "linear", "matmul", "baddbmm")),
    ("attention kernel", ("scaled_dot_product", "flash_attention", "_efficient_attention")),
    ("softmax", ("softmax",)),
    ("layer norm", ("layer_norm",)),
    ("gelu", ("gelu",)),
    ("patch conv", ("convolution", "conv2d")),
    ("optimizer", ("adam", "_foreach", "lerp", "addcdiv", "addcmul")),
    ("copies / casts", ("copy_", "to_copy", "clone", "contiguous", "cat", "_to_copy")),
    ("elementwise", ("add", "mul", "div", "sub", "sqrt", "neg", "where", "fill", "zero_")),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10" / "val"))
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch's rate is reported")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `vitkit train` flags")
    return parser.parse_args()


def train_rate(args: argparse.Namespace, out: Path) -> dict:
    """Run the issue's command and return its summary.json plus the last epoch's images/s."""
    command = [
        sys.executable, "-m", "vitkit", "train", "--data", args.data, "--model", "Ti/4", "--img-size", "32",
        "--epochs", str(args.epochs), "--batch-size", "128", "--crop", "pad", "--randaugment-n", "2",
        "--mixup", "0", "--cutmix", "0", "--no-progress", "--out", str(out), *args.extra,
    ]  # fmt: skip
    subprocess.run(command, check=True)
    summary = json.loads((out / "summary.json").read_text())
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    header, body = rows[0], rows[1:]
    epoch_col, rate_col = header.index("epoch"), header.index("images_per_s")
    last = [float(r[rate_col]) for r in body if r[0] == "step" and int(r[epoch_col]) == args.epochs]
    summary["last_epoch_images_per_s"] = sorted(last)[len(last) // 2] if last else None
    return summary


def flops_per_image(img_size: int = 32) -> float:
    """Forward + backward FLOPs of one image through ViT-Ti/4 (torch.utils.flop_counter; backward ~ 2x forward)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("Ti/4", num_classes=10, img_size=img_size)
    images = torch.randn(8, 3, img_size, img_size)
    with FlopCounterMode(display=False) as counter:
        model(images).sum().backward()
    return counter.get_total_flops() / 8


def profile_steps(precision: str, steps: int = 3) -> list[tuple[str, float]]:
    """Self CPU time per group over a few bare steps of the same model, batch and precision."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    model = create_model("Ti/4", num_classes=10, img_size=32, pool="gap")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

    def step() -> None:
        with sdpa_kernel([SDPBackend.MATH]), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        name = event.key.lower()
        group = next((g for g, keys in GROUPS if any(k in name for k in keys)), "other")
        totals[group] += event.self_cpu_time_total / 1e6 / steps
    return sorted(totals.items(), key=lambda item: -item[1])


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        summary = train_rate(args, Path(scratch) / "run")
    rate = summary["last_epoch_images_per_s"] or summary["train_images_per_s"]
    dtype = torch.bfloat16 if summary["precision"] == "bf16" else torch.float32
    peak = matmul_peak_tflops(dtype, size=2048) * 1e12
    flops = flops_per_image()
    print(f"runtime chosen: {summary['precision']} ({summary['precision_reason']}), {summary['threads']} threads, "
          f"attention {summary['attention']}")  # fmt: skip
    print(f"| images/s (median step, epoch {args.epochs}) | GFLOP per image (fwd+bwd) | 2048^3 {summary['precision']} "
          f"matmul peak | share of peak |\n|---:|---:|---:|---:|\n| {rate:.0f} | {flops / 1e9:.2f} | "
          f"{peak / 1e12:.2f} TFLOP/s | {rate * flops / peak:.0%} |")  # fmt: skip
    print("\nwhere a bare step's time goes (torch.profiler self CPU time, per step):")
    groups = profile_steps(summary["precision"])
    total = sum(t for _, t in groups)
    for group, seconds in groups:
        print(f"  {group:<22} {1000 * seconds:7.1f} ms  {seconds / total:5.1%}")


if __name__ == "__main__":
    main()
