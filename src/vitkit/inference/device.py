"""The device a model runs on, the precisions it computes in and their autocast context (shared by training and
inference, which sits below it)."""

from __future__ import annotations

import contextlib

import torch

from vitkit.errors import UsageError
from vitkit.inference.modes import INFERENCE_PRECISIONS, PRECISIONS, TRAINING_PRECISIONS

__all__ = ["INFERENCE_PRECISIONS", "PRECISIONS", "TRAINING_PRECISIONS", "autocast", "resolve_device"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> cuda when available (GPU `local_rank`, this rank's under torchrun, made current), else cpu; an
    explicit cuda request without a GPU is an error."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was requested but torch sees no CUDA device; use --device cpu or auto")
    return device


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed-precision autocast for bf16/fp16; a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
