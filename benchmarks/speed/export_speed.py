"""Images/s of one checkpoint in PyTorch eager fp32/bf16, torch.compile, ONNX Runtime fp32/int8, AOTInductor
.pt2 and timm's equivalent ViT, alternating.

    OMP_NUM_THREADS=1 python benchmarks/speed/export_speed.py CKPT --onnx-dir DIR [--rounds 5] [--seconds 2]

DIR holds model.onnx and model.int8-dynamic.onnx, and if present model.int8-static.onnx and pt2/model.pt2
(benchmarks/experiments/export_accuracy.py writes them all). Each round times every backend once, in turn, at
batch 1 and 32, for about `--seconds` each; the median round is reported, so load from other processes on the
machine hits all backends alike. One thread everywhere.

The timm row (only when timm imports: PYTHONPATH=$(../shared/tools/timm-site.sh)) is timm's VisionTransformer
with the checkpoint's transformer (width, depth, heads, MLP, pooling, tokens), random weights, eager fp32; a
hybrid's CNN stem has no timm counterpart, so there timm's patch-embedding convolution makes the same tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vitkit.export import OnnxModel, Pt2Model
from vitkit.inference import load_for_inference


def rate(run: Callable[[torch.Tensor], object], images: torch.Tensor, seconds: float) -> float:
    """Images/s of `run` on `images` over about `seconds`, after one warm-up call."""
    run(images)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(images)
        count += 1
    return count * len(images) / (time.perf_counter() - start)


def backends(checkpoint: str, onnx_dir: Path) -> dict[str, Callable[[torch.Tensor], object]]:
    """Name -> a function classifying a normalised float batch."""
    model = load_for_inference(checkpoint, "cpu").model
    compiled = torch.compile(model)

    def eager(x: torch.Tensor) -> object:
        with torch.no_grad():
            return model(x)

    def bf16(x: torch.Tensor) -> object:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)

    def compiled_fp32(x: torch.Tensor) -> object:
        with torch.no_grad():
            return compiled(x)

    runners = {
        "PyTorch eager fp32": eager,
        "PyTorch eager bf16 (autocast)": bf16,
        "torch.compile fp32": compiled_fp32,
        "ORT fp32": OnnxModel(onnx_dir / "model.onnx", threads=1).run,
        "ORT int8 dynamic": OnnxModel(onnx_dir / "model.int8-dynamic.onnx", threads=1).run,
    }
    if (onnx_dir / "model.int8-static.onnx").is_file():
        runners["ORT int8 static (QDQ)"] = OnnxModel(onnx_dir / "model.int8-static.onnx", threads=1).run
    if (onnx_dir / "pt2" / "model.pt2").is_file():
        runners["AOTInductor .pt2 fp32"] = Pt2Model(onnx_dir / "pt2" / "model.pt2", threads=1).run
    timm_name, timm_model = timm_equivalent(model.config)
    if timm_model is not None:

        def timm_eager(x: torch.Tensor) -> object:
            with torch.no_grad():
                return timm_model(x)

        runners[timm_name] = timm_eager
    return runners


def timm_equivalent(config) -> tuple[str, torch.nn.Module | None]:
    """A row name and timm's VisionTransformer with the transformer of vitkit's ViT `config`; no model without
    timm or for a model that is not a plain ViT or hybrid."""
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:
        print("timm is not importable: no timm row (PYTHONPATH=$(../shared/tools/timm-site.sh) adds it)")
        return "", None
    if not hasattr(config, "hidden_dim") or config.distilled:
        print(f"{config.name}: no timm equivalent row (not a plain ViT or hybrid)")
        return "", None
    model = VisionTransformer(
        img_size=config.img_size[0],
        patch_size=config.patch_size[0],
        embed_dim=config.hidden_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_dim / config.hidden_dim,
        qkv_bias=config.qkv_bias,
        num_classes=config.num_classes,
        class_token=config.pool == "token",
        global_pool="token" if config.pool == "token" else "avg",
        fc_norm=False,  # vitkit's GAP: the final norm on every token, then the mean
    )
    what = "the same ViT" if config.stem is None else f"the ViT body; a patch conv for the {config.stem} stem"
    return f"timm eager fp32 ({what}, random weights)", model.eval()


def main() -> None:
    """Time every backend at batch 1 and 32, alternating, and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--onnx-dir", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runners = backends(args.checkpoint, args.onnx_dir)
    size = OnnxModel(args.onnx_dir / "model.onnx").meta.img_size
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for batch in (1, 32):
            images = torch.randn(batch, 3, size, size)
            for name, run in runners.items():
                results.setdefault((name, batch), []).append(rate(run, images, args.seconds))
    base = {b: statistics.median(results[("PyTorch eager fp32", b)]) for b in (1, 32)}
    print(
        "| backend | batch 1 img/s | vs eager fp32 | batch 32 img/s | vs eager fp32 |\n| --- | --- | --- | --- | --- |"
    )
    for name in runners:
        one, many = (statistics.median(results[(name, b)]) for b in (1, 32))
        print(f"| {name} | {one:.0f} | {one / base[1]:.2f}x | {many:.0f} | {many / base[32]:.2f}x |")


if __name__ == "__main__":
    main()
