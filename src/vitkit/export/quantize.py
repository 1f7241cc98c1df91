"""ONNX Runtime int8 quantisation of an exported model: MatMul/Gemm weights per output channel.

"dynamic" quantises weights ahead and activations at run time; "static" writes QDQ nodes whose activation
ranges are calibrated on images. Convolutions are left in fp32 (a hybrid's stem, a ViT's patch embedding):
dynamic int8 convolutions are the known way to wreck a hybrid, and they are a small share of a ViT's time.

Weights are quantised to 7 bits by default (ONNX Runtime's `reduce_range`). On x86 CPUs without VNNI (AVX2 or
AVX-512 only, e.g. AMD Zen 3) ONNX Runtime multiplies u8 activations by s8 weights with VPMADDUBSW, which adds
pairs of products in int16 and saturates: full 8-bit weights there gave logits 30% off on a tiny ViT, while the
same file was fine on a CPU with VNNI. An int8 file is deployed to machines we do not know, so the portable
choice is the default; `reduce_range=False` (`--full-range-int8`) keeps 8 bits for VNNI/AMX machines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitkit.errors import UsageError
from vitkit.export.deps import require
from vitkit.export.metadata import read_metadata, write_metadata

MODES = ("dynamic", "static")
METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}  # ours -> ONNX Runtime's


@dataclass(frozen=True)
class StaticInt8:
    """How `--quantize static` calibrates activations and what it keeps in fp32. The defaults measured best on
    the CIFAR-10 model (99.9% top-1 agreement with PyTorch vs 99.1% for int8 activations everywhere, on 1,000 val
    images; docs/export.md): uint8 activations with a zero point, and attention's own MatMuls left in fp32."""

    method: str = "minmax"  # activation ranges: minmax | percentile | entropy (ONNX Runtime's calibrators)
    percentile: float = 99.999  # for "percentile"
    skip_attention: bool = True  # keep the activation x activation MatMuls (Q K^T, A V) in fp32
    skip_head: bool = False  # keep the classifier (the MatMul/Gemm whose result is an output) in fp32
    per_channel: bool = True  # weights: one scale per output channel (else one per tensor)
    symmetric_activations: bool = False  # int8 activations around 0 (default: uint8 with a zero point)


def quantize_onnx(
    fp32_path: str | Path,
    out: str | Path,
    mode: str,
    calibration: Iterator[np.ndarray] | None = None,
    reduce_range: bool = True,
    static: StaticInt8 = StaticInt8(),
) -> Path:
    """Write the int8 version of the exported `fp32_path` to `out`, with its metadata; returns `out`.

    `reduce_range` keeps weights to 7 bits so that CPUs without VNNI do not saturate (module docstring);
    `static` says how mode "static" calibrates and what it leaves in fp32.
    """
    if mode not in MODES:
        raise UsageError(f"--quantize must be one of {', '.join(MODES)}, got {mode!r}")
    require("onnxruntime")
    from onnxruntime import quantization as q

    meta = read_metadata(fp32_path)
    prepared = Path(out).with_suffix(".prep.onnx")
    prepared.parent.mkdir(parents=True, exist_ok=True)
    q.quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    ops = ["MatMul", "Gemm"]
    if mode == "dynamic":
        q.quantize_dynamic(
            str(prepared),
            str(out),
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=q.QuantType.QInt8,
            op_types_to_quantize=ops,
        )
    else:
        if calibration is None:
            raise UsageError("--quantize static needs calibration images: give --calibration-data DIR")
        if static.method not in METHODS:
            raise UsageError(f"calibration method must be one of {', '.join(METHODS)}, got {static.method!r}")
        q.quantize_static(
            str(prepared),
            str(out),
            Calibration(calibration),
            quant_format=q.QuantFormat.QDQ,
            per_channel=static.per_channel,
            reduce_range=reduce_range,
            activation_type=q.QuantType.QInt8 if static.symmetric_activations else q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            op_types_to_quantize=ops,
            nodes_to_exclude=kept_in_fp32(prepared, static),
            calibrate_method=getattr(q.CalibrationMethod, METHODS[static.method]),
            extra_options={
                "ActivationSymmetric": static.symmetric_activations,
                "CalibPercentile": static.percentile,
            },
        )
    prepared.unlink(missing_ok=True)
    write_metadata(out, dataclasses.replace(meta, precision=f"int8-{mode}"))
    return Path(out)


def kept_in_fp32(model_path: Path, static: StaticInt8) -> list[str]:
    """Names of the MatMul/Gemm nodes `static` leaves unquantised: attention's (no weight input) and the head."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    weights = {init.name for init in graph.initializer}
    matmuls = [node for node in graph.node if node.op_type in ("MatMul", "Gemm")]
    skipped = []
    if static.skip_attention:
        skipped += [node.name for node in matmuls if not any(name in weights for name in node.input)]
    if static.skip_head:
        skipped += [node.name for node in heads(graph)]
    return skipped


def heads(graph) -> list:  # onnx.GraphProto -> [onnx.NodeProto]
    """The MatMul/Gemm nodes nearest the outputs: walking back from each output, the first ones met."""
    producer = {output: node for node in graph.node for output in node.output}
    found, seen = [], set()
    frontier = [output.name for output in graph.output]
    while frontier:
        node = producer.get(frontier.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("MatMul", "Gemm"):
            found.append(node)
        else:
            frontier += list(node.input)
    return found


class Calibration:
    """ONNX Runtime's CalibrationDataReader over model inputs, re-cut into batches of one size (at most 16): the
    histogram calibrators (percentile, entropy) stack every batch's activations and refuse a short last batch."""

    def __init__(self, batches: Iterator[np.ndarray], input_name: str = "images", most: int = 16) -> None:
        images = np.concatenate(list(batches))
        size = max(d for d in range(1, most + 1) if len(images) % d == 0)
        self.batches, self.input_name = iter(np.split(images, len(images) // size)), input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next input feed, or None when done."""
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}
