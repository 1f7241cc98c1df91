"""The device a model runs on and the autocast context of its precision (shared by training and inference)."""

from __future__ import annotations

import contextlib

import torch

from vitkit.errors import UsageError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; an explicit cuda request without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was requested but torch sees no CUDA device; use --device cpu or auto")
    return device


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed-precision autocast for bf16/fp16; a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
