"""Timing helpers shared by the benchmark scripts: medians of interleaved runs, the machine's bf16 peak."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of `fn` over `repeats` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_median_seconds(
    first: Callable[[], object], second: Callable[[], object], repeats: int, warmup: int = 2
) -> tuple[float, float]:
    """Median wall times of two callables timed alternately (A, B, A, B, ...), so load drift hits both alike."""
    for _ in range(warmup):
        first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def matmul_peak_tflops(dtype: torch.dtype = torch.bfloat16, size: int = 4096, repeats: int = 5) -> float:
    """Measured throughput of a large square matmul: the practical ceiling for transformer FLOPs here."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    seconds = median_seconds(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e12


def bf16_matmul_rates(size: int = 512) -> str:
    """A sentence with this machine's measured bf16 and fp32 matmul rates, to say why bf16 is skipped."""
    rates = {dtype: matmul_peak_tflops(dtype, size=size, repeats=2) for dtype in (torch.float32, torch.bfloat16)}
    return (
        f"a {size}^3 bf16 matmul runs at {1e3 * rates[torch.bfloat16]:.1f} GFLOP/s here, "
        f"{rates[torch.bfloat16] / rates[torch.float32]:.1%} of fp32's {1e3 * rates[torch.float32]:.1f} GFLOP/s"
    )


def machine_description() -> str:
    """CPU model, core count and torch version, for the results table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"
