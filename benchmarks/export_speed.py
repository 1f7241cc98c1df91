"""Images/s of one checkpoint in PyTorch eager fp32/bf16, torch.compile and ONNX Runtime fp32/int8, alternating.

    OMP_NUM_THREADS=1 python benchmarks/export_speed.py CKPT --onnx-dir DIR [--rounds 5] [--seconds 2]

DIR holds model.onnx and model.int8-dynamic.onnx (benchmarks/export_accuracy.py writes them). Each round times
every backend once, in turn, at batch 1 and 32, for about `--seconds` each; the median round is reported, so
load from other processes on the machine hits all backends alike. One thread everywhere.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vitkit.export import OnnxModel
from vitkit.inference import load_for_inference


def rate(run: Callable[[torch.Tensor], object], images: torch.Tensor, seconds: float) -> float:
    """Images/s of `run` on `images` over about `seconds`, after one warm-up call."""
    run(images)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(images)
        count += 1
    return count * len(images) / (time.perf_counter() - start)


def backends(checkpoint: str, onnx_dir: Path) -> dict[str, Callable[[torch.Tensor], object]]:
    """Name -> a function classifying a normalised float batch."""
    model = load_for_inference(checkpoint, "cpu").model
    compiled = torch.compile(model)

    def eager(x: torch.Tensor) -> object:
        with torch.no_grad():
            return model(x)

    def bf16(x: torch.Tensor) -> object:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)

    def compiled_fp32(x: torch.Tensor) -> object:
        with torch.no_grad():
            return compiled(x)

    fp32, int8 = OnnxModel(onnx_dir / "model.onnx", threads=1), OnnxModel(onnx_dir / "model.int8-dynamic.onnx", 1)
    return {
        "PyTorch eager fp32": eager,
        "PyTorch eager bf16 (autocast)": bf16,
        "torch.compile fp32": compiled_fp32,
        "ORT fp32": fp32.run,
        "ORT int8 dynamic": int8.run,
    }


def main() -> None:
    """Time every backend at batch 1 and 32, alternating, and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--onnx-dir", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runners = backends(args.checkpoint, args.onnx_dir)
    size = OnnxModel(args.onnx_dir / "model.onnx").meta.img_size
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for batch in (1, 32):
            images = torch.randn(batch, 3, size, size)
            for name, run in runners.items():
                results.setdefault((name, batch), []).append(rate(run, images, args.seconds))
    base = {b: statistics.median(results[("PyTorch eager fp32", b)]) for b in (1, 32)}
    print(
        "| backend | batch 1 img/s | vs eager fp32 | batch 32 img/s | vs eager fp32 |\n| --- | --- | --- | --- | --- |"
    )
    for name in runners:
        one, many = (statistics.median(results[(name, b)]) for b in (1, 32))
        print(f"| {name} | {one:.0f} | {one / base[1]:.2f}x | {many:.0f} | {many / base[32]:.2f}x |")


if __name__ == "__main__":
    main()
