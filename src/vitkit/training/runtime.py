"""Where and how a run computes, decided once: device, precision, threads, attention kernel, compile, processes.

`Runtime.create(config)` replaces every scattered decision: precision `auto` is decided by a short timed matmul
probe (cached per machine, torch version and thread count), threads default to the cores this process may use,
the attention kernel `auto` is chosen by timing both kernels at the model's own shapes, and under torchrun the
process group is joined here (gloo on CPU, NCCL on GPU). Only the main rank logs, saves and draws progress bars.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from vitkit.errors import UsageError
from vitkit.files import write_text_atomic
from vitkit.inference.device import autocast, resolve_device
from vitkit.models import Model
from vitkit.models.vit import attend, eager_attention

if TYPE_CHECKING:
    from vitkit.training.config import RuntimeConfig

log = logging.getLogger("vitkit.training")

# bf16 is chosen when the probe measures it at least this much faster than fp32: below it, fp32's accuracy wins.
BF16_MIN_SPEEDUP = 1.3
PROBE_SIZE = 1024  # a matmul the size of a ViT's (batch x tokens) x width product: big enough to be compute-bound


@dataclass
class DistContext:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """The rank that logs, saves checkpoints and writes metrics."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @classmethod
    def from_environment(cls) -> DistContext:
        """Read torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)."""
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(
            rank=int(env.get("RANK", "0")),
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", "0")),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))),
        )

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.enabled and dist.is_initialized():
            dist.barrier()


@dataclass
class Runtime:
    """The resolved runtime of one process: what `RuntimeConfig` asked for, made concrete and measured."""

    device: torch.device
    precision: str  # "bf16", "fp16" or "fp32"
    threads: int
    compile: bool = False
    attention: str = "auto"  # resolved later per model shape: "math", "flash", "eager" or "auto" (torch's choice)
    distributed: str = "none"  # "none", "ddp" or "fsdp"
    activation_checkpointing: bool = False
    dist: DistContext = field(default_factory=DistContext)
    precision_reason: str = ""  # why this precision, with the measured ratio when probed
    bf16_speedup: float | None = None  # measured bf16/fp32 matmul rate ratio (None: not probed)
    attention_reason: str = ""

    @classmethod
    def create(cls, config: RuntimeConfig) -> Runtime:
        """Resolve a `RuntimeConfig`: join the process group, pick device, threads and precision."""
        context = DistContext.from_environment()
        device = resolve_device(config.device, context.local_rank)
        threads = config.threads or default_threads(context)
        if device.type == "cpu" or config.threads:
            torch.set_num_threads(threads)
        if context.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        precision, reason, speedup = resolve_precision(config.precision, device)
        check_precision(precision, device)
        mode = config.distributed
        if mode == "auto":
            mode = "ddp" if context.enabled else "none"
        if mode != "none" and not context.enabled:
            raise UsageError(
                f"runtime.distributed={config.distributed} needs several processes: launch with "
                "`torchrun --nproc_per_node=N -m vitkit train ...`, or use distributed: auto"
            )
        return cls(
            device=device,
            precision=precision,
            threads=torch.get_num_threads(),
            compile=config.compile,
            attention=config.attention,
            distributed=mode,
            activation_checkpointing=config.activation_checkpointing,
            dist=context,
            precision_reason=reason,
            bf16_speedup=speedup,
        )

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision autocast for this run's precision (a no-op for fp32)."""
        return autocast(self.precision, self.device)

    def attention_kernel(self) -> contextlib.AbstractContextManager:
        """Restrict scaled-dot-product attention to the kernel chosen for this run."""
        return attention_kernel(self.attention)

    def choose_attention(self, batch: int, heads: int, tokens: int, head_dim: int) -> None:
        """Resolve attention "auto" on CPU by timing each kernel's forward + backward at the model's shapes."""
        if self.attention != "auto" or self.device.type != "cpu" or heads == 0:
            self.attention_reason = self.attention_reason or f"{self.attention} (as configured)"
            return
        times = {kind: time_attention(kind, batch, heads, tokens, head_dim, self.precision) for kind in ATTENTION}
        self.attention = min(times, key=times.get)
        detail = ", ".join(f"{kind} {1000 * t:.1f} ms" for kind, t in times.items())
        self.attention_reason = f"{self.attention} (measured at {batch}x{heads}x{tokens}x{head_dim}: {detail})"

    def choose_attention_for(self, model: Model, batch: int) -> None:
        """Resolve the attention kernel at the model's own shapes (nothing to choose without attention)."""
        shape = model.attention_shape()
        if shape is None:
            self.choose_attention(batch, 0, 0, 0)
        else:
            self.choose_attention(batch, shape.heads, shape.tokens, shape.head_dim)

    def describe(self) -> dict[str, object]:
        """What was resolved, for the run log and summary.json."""
        return {
            "device": str(self.device),
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "bf16_speedup": self.bf16_speedup,
            "threads": self.threads,
            "attention": self.attention,
            "attention_reason": self.attention_reason,
            "compile": self.compile,
            "distributed": self.distributed,
            "world_size": self.dist.world_size,
            "activation_checkpointing": self.activation_checkpointing,
        }

    def close(self, wait: bool = True) -> None:
        """Leave the process group (end of a torchrun job); `wait` first for every rank to finish."""
        if self.dist.enabled and dist.is_initialized():
            if wait:
                # A rank tearing the group down while another still writes its summary or checkpoint aborts
                # that rank's gloo threads ("terminate called without an active exception").
                dist.barrier()
            dist.destroy_process_group()


def default_threads(context: DistContext | None = None) -> int:
    """The cores this process may use (its CPU affinity), shared among the ranks on this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    ranks_here = context.local_world_size if context is not None else 1
    return max(1, cores // ranks_here)


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str, float | None]:
    """(precision, why, measured bf16 speed-up): "auto" is decided by measuring, never by CPU flags."""
    if precision != "auto":
        return precision, "as configured", None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: CUDA device with bf16 support", None
        return "fp16", "auto: CUDA device without bf16 (fp16 with loss scaling)", None
    speedup = bf16_speedup()
    if speedup >= BF16_MIN_SPEEDUP:
        return "bf16", f"auto: bf16 matmuls measured {speedup:.1f}x faster than fp32 on this CPU", speedup
    return "fp32", f"auto: bf16 matmuls measured {speedup:.2f}x the fp32 rate on this CPU (no gain)", speedup


def probe_cache_path() -> Path:
    """Where probe results are kept: one JSON file per user (XDG cache, or ~/.cache/vitkit)."""
    root = os.environ.get("VITKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "vitkit"
    )
    return Path(root) / "probes.json"


def machine_key() -> str:
    """CPU model, torch version and thread count: what the bf16/fp32 ratio depends on."""
    cpu = next((line for line in (read_cpuinfo() or "").splitlines() if line.startswith("model name")), "unknown")
    text = f"{cpu}|{torch.__version__}|{torch.get_num_threads()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bf16_speedup(cache: Path | None = None) -> float:
    """bf16 over fp32 matmul rate on this CPU, measured once per machine key and cached on disk."""
    cache = cache or probe_cache_path()
    key = f"bf16_speedup_v2:{machine_key()}"  # v2: timed in turn (`matmul_rates`); older entries are re-measured
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(cache.read_text())
        if key in stored:
            return float(stored[key])
    rates = matmul_rates((torch.bfloat16, torch.float32))
    speedup = rates[torch.bfloat16] / rates[torch.float32]
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(cache.read_text()) if cache.is_file() else {}
        stored[key] = round(speedup, 3)
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache, json.dumps(stored, indent=1))  # concurrent ranks or runs never read half a file
    return speedup


def matmul_rates(
    dtypes: tuple[torch.dtype, ...], size: int = PROBE_SIZE, seconds: float = 0.3
) -> dict[torch.dtype, float]:
    """FLOP/s of a size^3 CPU matmul in each dtype: best of timings taken in turn, one per dtype per round, so
    that a load which comes and goes (another job on the cores) reaches every dtype alike. Timed one dtype after
    the other, a probe under load once cached a bf16 speed-up of 32x for a CPU whose true ratio is ~3.5x."""
    generator = torch.Generator().manual_seed(0)  # a private generator: the run's random streams stay untouched
    pairs = {dtype: [torch.randn(size, size, generator=generator).to(dtype) for _ in range(2)] for dtype in dtypes}
    for a, b in pairs.values():
        a @ b  # warm-up
    best = dict.fromkeys(dtypes, float("inf"))
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for dtype, (a, b) in pairs.items():
            tick = time.perf_counter()
            a @ b
            best[dtype] = min(best[dtype], time.perf_counter() - tick)
    return {dtype: 2 * size**3 / elapsed for dtype, elapsed in best.items()}


@functools.cache
def read_cpuinfo() -> str | None:
    """The text of /proc/cpuinfo, read once per process; None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read()
    except OSError:
        return None


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse combinations that cannot work, saying what to use instead."""
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device (it relies on a GradScaler); use bf16 or fp32 on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"{torch.cuda.get_device_name(device)} has no bfloat16 support; use --precision fp16 or fp32")


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A warning for bf16 forced on a CPU where the probe measures it slower than fp32, else None."""
    if precision == "bf16" and device.type == "cpu":
        speedup = bf16_speedup()
        if speedup < 1.0:
            return (
                f"bf16 was requested, but bf16 matmuls run at {speedup:.2f}x the fp32 rate on this CPU (no native "
                "bf16); use --precision fp32 (or auto, which measures and picks fp32 here)"
            )
    return None


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 has fp32's range and needs no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


ATTENTION = ("math", "flash", "eager")


@contextlib.contextmanager
def attention_kernel(kind: str) -> Iterator[None]:
    """Restrict attention to one kernel or leave torch's choice ("auto"): SDPA's "math" or "flash" kernel, or
    "eager" (explicit matmuls and softmax, `vitkit.models.vit.eager_attention`)."""
    if kind == "auto":
        yield
        return
    if kind == "eager":
        with eager_attention():
            yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = SDPBackend.MATH if kind == "math" else SDPBackend.FLASH_ATTENTION
    with sdpa_kernel([backend]):
        yield


def time_attention(kind: str, batch: int, heads: int, tokens: int, head_dim: int, precision: str) -> float:
    """Median seconds of one attention forward + backward with `kind` at these shapes (CPU), under the run's
    autocast as in training (it decides, e.g., the precision of the eager path's softmax)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    generator = torch.Generator().manual_seed(0)  # a private generator: the run's random streams stay untouched
    shape = (batch, heads, tokens, head_dim)
    q, k, v = (torch.randn(shape, generator=generator).to(dtype).requires_grad_() for _ in range(3))
    grad = torch.randn(shape, generator=generator).to(dtype)
    times = []
    with attention_kernel(kind), autocast(precision, torch.device("cpu")):
        for _ in range(4):
            tick = time.perf_counter()
            attend(q, k, v)[0].backward(grad)
            times.append(time.perf_counter() - tick)
    return sorted(times[1:])[1]
