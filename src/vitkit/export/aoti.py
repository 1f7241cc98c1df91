"""AOTInductor, torch's ahead-of-time compiler: its entry points, and loading a compiled .pt2 package.

Apart from `vitkit.export.pt2` (which compiles) so that reading a package's metadata or running it needs
nothing of the export path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vitkit.errors import MissingPathError, UsageError


def load_package(path: str | Path) -> Any:
    """The compiled model of a .pt2 package (callable on CPU tensors; `get_metadata()` gives its metadata)."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path} not found; create it with `vitkit export CKPT --format pt2 --out {path}`")
    try:
        return aoti().aoti_load_package(str(path))
    except RuntimeError as error:
        raise UsageError(
            f"{path} could not be loaded as an AOTInductor package ({str(error).splitlines()[0]}): a .pt2 runs only "
            "with a torch like the one that compiled it, on a CPU like the one it was compiled on; export it again"
        ) from error


def aoti() -> Any:
    """`torch._inductor` with AOTInductor packaging, or a UsageError naming the torch version that lacks it."""
    try:
        import torch._inductor as inductor
    except ImportError as error:  # a torch build without inductor
        raise UsageError(f"--format pt2 needs torch's inductor, missing from torch {torch.__version__}") from error
    missing = [name for name in ("aoti_compile_and_package", "aoti_load_package") if not hasattr(inductor, name)]
    if missing or not hasattr(torch, "export"):
        raise UsageError(
            f"--format pt2 needs torch.export and AOTInductor packaging ({', '.join(missing) or 'torch.export'} "
            f"missing from torch {torch.__version__}); upgrade torch or export to ONNX (--format onnx)"
        )
    return inductor
