"""Device and numeric precision: autocast contexts, the fp16 GradScaler, thread counts and attention kernels."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

# Shared with inference, which sits below training; re-exported so training code keeps one import.
from vitkit.inference.device import autocast, resolve_device  # noqa: F401


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Sapphire Rapids and later), which make bf16 matmuls several times faster."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if probe is not None:
        with contextlib.suppress(Exception):
            return bool(probe())
    cpuinfo = read_cpuinfo()
    return cpuinfo is not None and "amx_bf16" in cpuinfo


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); without it bf16 matmuls crawl."""
    if cpu_has_amx():
        return True
    cpuinfo = read_cpuinfo()
    return cpuinfo is None or "avx512_bf16" in cpuinfo  # unreadable (not Linux): unknown, so do not warn


@functools.cache
def read_cpuinfo() -> str | None:
    """The text of /proc/cpuinfo, read once per process; None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read()
    except OSError:
        return None


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A warning for a precision that works but is far slower than fp32 on this device, else None."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        # Measured on an AMD EPYC (Zen 3): a 512^3 bf16 matmul at ~1 GFLOP/s against ~110 GFLOP/s in fp32.
        return (
            "bf16 was requested on a CPU without native bf16 matmuls (no AVX512-BF16 or AMX): they run about "
            "100x slower than fp32 here; use --precision fp32 (or auto, which picks fp32 on this CPU)"
        )
    return None


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" -> bf16 on CUDA with bf16 support and on AMX CPUs, else fp32 (measured faster without AMX)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_amx() else "fp32"


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse combinations that cannot work, saying what to use instead."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a CUDA device (it relies on a GradScaler); use bf16 or fp32 on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{torch.cuda.get_device_name(device)} has no bfloat16 support; use --precision fp16 or fp32")


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 has fp32's range and needs no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


@contextlib.contextmanager
def attention_kernel(kind: str) -> Iterator[None]:
    """Restrict scaled-dot-product attention to one kernel ("math", "flash") or leave torch's choice ("auto")."""
    if kind == "auto":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = SDPBackend.MATH if kind == "math" else SDPBackend.FLASH_ATTENTION
    with sdpa_kernel([backend]):
        yield
