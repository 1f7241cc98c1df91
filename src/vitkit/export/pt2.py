"""`vitkit export --format pt2`: any checkpoint vitkit loads -> an AOTInductor package (.pt2) with its metadata.

`torch.export.export` with a dynamic batch, then `torch._inductor.aoti_compile_and_package`: the graph is
compiled ahead of time to C++ kernels in a shared library inside the .pt2 zip, which `aoti.load_package` (and
`vitkit predict`/`eval`) runs without Python model code. The resolution is fixed (E_pos resampled once) unless
`dynamic_size`, as for ONNX. The package holds machine code for the CPU it was compiled on (its instruction
set, e.g. AVX-512/AMX) and needs libtorch at run time: it is for serving on the machine type that built it, not
a portable format. The vitkit metadata goes into the package (AOTInductor's `aot_inductor.metadata`, read back
with `get_metadata()`) and into a config.json beside it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from vitkit.errors import UsageError
from vitkit.export.aoti import aoti
from vitkit.export.deployable import deployable, example_input
from vitkit.export.metadata import ExportMetadata, write_config


def export_pt2(
    source: str | Path,
    out: str | Path,
    *,
    img_size: int | None = None,
    dynamic_size: bool = False,
    include_preprocessing: bool = False,
) -> tuple[Path, ExportMetadata]:
    """Compile the checkpoint `source` names into the AOTInductor package `out` (.pt2); returns path, metadata."""
    inductor = aoti()
    out = Path(out)
    if out.suffix.lower() != ".pt2":
        raise UsageError(f"--format pt2 writes an AOTInductor package, whose name ends in .pt2; got --out {out}")
    if not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        raise UsageError("--format pt2 compiles C++ with AOTInductor: install a C++ compiler (g++) or set CXX")
    wrapper, meta = deployable(source, img_size, include_preprocessing, dynamic_size)
    example, axes = example_input(wrapper, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.export.export(wrapper, (example,), dynamic_shapes=(axes,))
        inductor.aoti_compile_and_package(
            program, package_path=str(out), inductor_configs={"aot_inductor.metadata": meta.to_props()}
        )
    write_config(out, meta)
    return out, meta
