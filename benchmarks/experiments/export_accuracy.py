"""Top-1 agreement and accuracy of a checkpoint in PyTorch vs its exported files (ONNX Runtime fp32, int8
dynamic/static; AOTInductor .pt2), optionally with a sweep of static int8 settings.

    OMP_NUM_THREADS=1 python benchmarks/experiments/export_accuracy.py CKPT --data DIR [--out DIR]
        [--calibration-images 128] [--static-sweep] [--no-pt2]

Every image of the data's val split (CIFAR: the test set) is classified by PyTorch eager fp32 and by each
exported file; static int8 is calibrated on training images (never the val ones). The files stay in --out for
benchmarks/speed/export_speed.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vitkit.data import load_dataset
from vitkit.export import evaluate_exported, export_onnx, export_pt2, quantize_onnx
from vitkit.export.quantize import StaticInt8
from vitkit.inference import evaluate_checkpoint, select_eval_data

# Static int8 settings tried (--static-sweep): name -> (settings, calibration images).
SWEEP = {
    "MinMax, uint8 activations, attention MatMuls fp32 (the default)": (StaticInt8(), 128),
    "MinMax, int8 activations, attention MatMuls fp32": (StaticInt8(symmetric_activations=True), 128),
    "MinMax, int8 activations, attention MatMuls + head fp32": (
        StaticInt8(symmetric_activations=True, skip_head=True),
        128,
    ),
    "MinMax, uint8 activations, everything quantised": (StaticInt8(skip_attention=False), 128),
    "MinMax, 1024 images": (StaticInt8(), 1024),
    "Percentile 99.999, 1024 images": (StaticInt8(method="percentile"), 1024),
    "Entropy, 1024 images": (StaticInt8(method="entropy"), 1024),
    "MinMax, per-tensor weights": (StaticInt8(per_channel=False), 128),
    "MinMax, uint8 activations, attention MatMuls + head fp32": (StaticInt8(skip_head=True), 128),
    "MinMax, int8 activations, everything quantised (the earlier default)": (
        StaticInt8(symmetric_activations=True, skip_attention=False),
        128,
    ),
}


def calibration(prep, data: str, count: int, batch: int = 16) -> list[np.ndarray]:
    """`count` training images (a seeded shuffle), normalised as the model expects, in batches."""
    from vitkit.data import EvalTransform, make_loader

    config, _ = select_eval_data(prep, data, "train")
    train = load_dataset(config).train
    transform = EvalTransform(prep.img_size, prep.mean, prep.std)
    batches, seen = [], 0
    for images, _ in make_loader(train, batch, shuffle=True, seed=0, epoch=0, device=torch.device("cpu")):
        if seen >= count:
            break
        batches.append(transform(images[: count - seen]).numpy())
        seen += len(batches[-1])
    return batches


def main() -> None:
    """Export, quantise, evaluate every variant, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="/tmp/export_accuracy")
    parser.add_argument("--calibration-images", type=int, default=128)
    parser.add_argument("--static-sweep", action="store_true", help="also every static int8 setting in SWEEP")
    parser.add_argument("--no-pt2", action="store_true", help="skip the AOTInductor .pt2 (a C++ compile)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    start = time.time()
    reference = evaluate_checkpoint(args.checkpoint, args.data, device="cpu", precision="fp32", keep_logits=True)
    prep = reference.preprocessing
    base = reference.result
    labels = base.logits.argmax(1)
    rows = [{"model": "PyTorch eager fp32", "top1": base.top1, "agreement": 100.0, "max_abs_logit_diff": 0.0}]
    print(f"{args.checkpoint} on {reference.data.description}: {base.images} images")
    print("| model | top-1 % | top-1 agreement with PyTorch % | max abs logit diff |\n| --- | --- | --- | --- |")
    print(f"| PyTorch eager fp32 | {base.top1:.2f} | 100.00 | 0 |", flush=True)

    def row(name: str, file: Path) -> None:
        """Evaluate `file` on every val image, compare with PyTorch, print and keep its row."""
        result = evaluate_exported(file, args.data, split=reference.data.split).result
        agreement = (result.logits.argmax(1) == labels).float().mean().item() * 100
        diff = (result.logits - base.logits).abs().max().item()
        rows.append({"model": name, "top1": result.top1, "agreement": agreement, "max_abs_logit_diff": diff})
        print(f"| {name} | {result.top1:.2f} | {agreement:.2f} | {diff:.2e} |", flush=True)

    fp32, _ = export_onnx(args.checkpoint, out / "model.onnx")
    row("ORT fp32", fp32)
    row("ORT int8 dynamic", quantize_onnx(fp32, out / "model.int8-dynamic.onnx", "dynamic"))
    full = quantize_onnx(fp32, out / "model.int8-dynamic-full.onnx", "dynamic", reduce_range=False)
    row("ORT int8 dynamic, 8-bit weights", full)
    calibrations = {args.calibration_images: calibration(prep, args.data, args.calibration_images)}
    static = iter(calibrations[args.calibration_images])
    row("ORT int8 static (QDQ)", quantize_onnx(fp32, out / "model.int8-static.onnx", "static", static))
    static = iter(calibrations[args.calibration_images])
    full = quantize_onnx(fp32, out / "model.int8-static-full.onnx", "static", static, reduce_range=False)
    row("ORT int8 static (QDQ), 8-bit weights", full)
    if args.static_sweep:
        for i, (name, (settings, count)) in enumerate(SWEEP.items()):
            if count not in calibrations:
                calibrations[count] = calibration(prep, args.data, count)
            sweep = out / "sweep" / f"static{i}.onnx"
            file = quantize_onnx(fp32, sweep, "static", iter(calibrations[count]), static=settings)
            row(f"static sweep: {name} ({count} images)", file)
    if not args.no_pt2:
        compile_start = time.time()
        pt2 = export_pt2(args.checkpoint, out / "pt2" / "model.pt2")[0]
        print(f"AOTInductor .pt2: exported and compiled in {time.time() - compile_start:.0f} s (1 thread)")
        row("AOTInductor .pt2 fp32", pt2)
    print(f"{time.time() - start:.0f} s")
    (out / "accuracy.json").write_text(json.dumps({"images": base.images, "rows": rows}, indent=2) + "\n")
    np.save(out / "labels_torch.npy", labels.numpy())


if __name__ == "__main__":
    main()
