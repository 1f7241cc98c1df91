"""Top-1 agreement and accuracy of a checkpoint in PyTorch vs its ONNX Runtime export (fp32, int8 dynamic/static).

    OMP_NUM_THREADS=1 python benchmarks/export_accuracy.py CKPT --data DIR [--out DIR] [--calibration-images 128]

Every image of the data's val split (CIFAR: the test set) is classified by PyTorch eager fp32 and by each
exported file; static int8 is calibrated on training images (never the val ones).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vitkit.data import load_dataset
from vitkit.export import evaluate_onnx, export_onnx, quantize_onnx
from vitkit.inference import evaluate_checkpoint, select_eval_data


def calibration(prep, data: str, count: int, batch: int = 16):
    """`count` training images (a seeded shuffle), normalised as the model expects, in batches."""
    from vitkit.data import EvalTransform, make_loader

    config, _ = select_eval_data(prep, data, "train")
    train = load_dataset(config).train
    transform = EvalTransform(prep.img_size, prep.mean, prep.std)
    seen = 0
    for images, _ in make_loader(train, batch, shuffle=True, seed=0, epoch=0, device=torch.device("cpu")):
        if seen >= count:
            return
        yield transform(images[: count - seen]).numpy()
        seen += len(images)


def main() -> None:
    """Export, quantise, evaluate every variant, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="/tmp/export_accuracy")
    parser.add_argument("--calibration-images", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    start = time.time()
    reference = evaluate_checkpoint(args.checkpoint, args.data, device="cpu", precision="fp32", keep_logits=True)
    fp32, _ = export_onnx(args.checkpoint, out / "model.onnx")
    files = {
        "ORT fp32": fp32,
        "ORT int8 dynamic": quantize_onnx(fp32, out / "model.int8-dynamic.onnx", "dynamic"),
        "ORT int8 dynamic, 8-bit weights": quantize_onnx(
            fp32, out / "model.int8-dynamic-full.onnx", "dynamic", reduce_range=False
        ),
        "ORT int8 static (QDQ)": quantize_onnx(
            fp32,
            out / "model.int8-static.onnx",
            "static",
            calibration(reference.preprocessing, args.data, args.calibration_images),
        ),
    }
    base = reference.result
    labels = base.logits.argmax(1)
    rows = [{"model": "PyTorch eager fp32", "top1": base.top1, "agreement": 100.0, "max_abs_logit_diff": 0.0}]
    for name, file in files.items():
        result = evaluate_onnx(file, args.data, split=reference.data.split).result
        rows.append(
            {
                "model": name,
                "top1": result.top1,
                "agreement": (result.logits.argmax(1) == labels).float().mean().item() * 100,
                "max_abs_logit_diff": (result.logits - base.logits).abs().max().item(),
            }
        )
    print(f"{args.checkpoint} on {reference.data.description}: {base.images} images, {time.time() - start:.0f} s")
    print("| model | top-1 % | top-1 agreement with PyTorch % | max abs logit diff |\n| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['model']} | {row['top1']:.2f} | {row['agreement']:.2f} | {row['max_abs_logit_diff']:.2e} |")
    (out / "accuracy.json").write_text(json.dumps({"images": base.images, "rows": rows}, indent=2) + "\n")
    np.save(out / "labels_torch.npy", labels.numpy())


if __name__ == "__main__":
    main()
