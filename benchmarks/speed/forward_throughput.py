"""Forward throughput (images/s) of vitkit against Hugging Face transformers' ViT, same inputs, one run.

Usage: python benchmarks/speed/forward_throughput.py [--models S/16 B/16] [--batch-size 16] [--repeats 10]

Both models get the same weights (vitkit loads the HF checkpoint), the same batch, the same thread count.
Calls alternate between the two (A, B, A, B, ...) so that machine noise hits both alike; the median of each
is reported. The last column is vitkit's FLOP rate (measured FLOPs x images/s) over a large matmul's rate in
the same dtype, measured in the same run: the practical ceiling of this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vitkit  # noqa: E402
from common import bf16_matmul_rates, machine_description, matmul_peak_tflops, paired_median_seconds  # noqa: E402
from vitkit.models.summary import summarize  # noqa: E402
from vitkit.training.runtime import bf16_speedup  # noqa: E402

MODES = ("fp32", "bf16 autocast", "bf16 weights")


def hf_model(variant: str, img_size: int):
    """A random-init HF ViTForImageClassification with the variant's shape (SDPA attention)."""
    from transformers import ViTConfig as HFConfig
    from transformers import ViTForImageClassification

    config = vitkit.models.model_config(variant, img_size=img_size)
    hf_config = HFConfig(
        hidden_size=config.hidden_dim,
        num_hidden_layers=config.depth,
        num_attention_heads=config.num_heads,
        intermediate_size=config.mlp_dim,
        image_size=img_size,
        patch_size=config.patch_size[0],
        num_labels=1000,
        layer_norm_eps=1e-6,
        attn_implementation="sdpa",
    )
    return ViTForImageClassification(hf_config).eval()


def runner(model: torch.nn.Module, images: torch.Tensor, mode: str, is_hf: bool):
    """A zero-argument callable doing one forward pass in `mode`."""
    if mode == "bf16 weights":
        model, images = model.to(torch.bfloat16), images.to(torch.bfloat16)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16 autocast" else contextlib.nullcontext()

    def forward():
        with torch.inference_mode(), autocast:
            return model(pixel_values=images).logits if is_hf else model(images)

    return forward


def main() -> None:
    """Measure every (model, mode) pair and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["S/16", "B/16"])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="precisions to measure")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    modes = list(args.modes)
    if any(mode.startswith("bf16") for mode in modes) and bf16_speedup() < 1.0:
        # The same test `vitkit train` warns on: without AVX512-BF16 or AMX a bf16 run would take hours.
        modes = [mode for mode in modes if not mode.startswith("bf16")]
        print(f"skipping the bf16 modes: {bf16_matmul_rates()} (no AVX512-BF16 or AMX on this CPU)")
    dtypes = {torch.float32 if mode == "fp32" else torch.bfloat16 for mode in modes}
    peaks = {dtype: matmul_peak_tflops(dtype) for dtype in dtypes}
    peak_text = ", ".join(f"{str(dtype).removeprefix('torch.')} {tflops:.3f}" for dtype, tflops in peaks.items())
    print(f"machine: {machine_description()}; measured matmul peak: {peak_text} TFLOP/s\n")
    rows = []
    for variant in args.models:
        gflops = summarize(vitkit.models.model_config(variant, img_size=args.img_size)).gflops
        for mode in modes:
            with tempfile.TemporaryDirectory() as tmp:
                reference = hf_model(variant, args.img_size)
                reference.save_pretrained(tmp)
                ours = vitkit.create_model(pretrained=tmp).eval()
            images = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
            run_ours, run_hf = runner(ours, images, mode, False), runner(reference, images, mode, True)
            ours_s, hf_s = paired_median_seconds(run_ours, run_hf, args.repeats)
            ours_ips, hf_ips = args.batch_size / ours_s, args.batch_size / hf_s
            peak = peaks[torch.float32 if mode == "fp32" else torch.bfloat16]
            share = ours_ips * gflops / 1e3 / peak
            rows.append((variant, mode, ours_ips, hf_ips, ours_ips / hf_ips, share))
            print(f"{variant} {mode}: vitkit {ours_ips:.1f} img/s, HF {hf_ips:.1f} img/s", flush=True)
    print("\n| Model | Precision | vitkit img/s | HF transformers img/s | vitkit / HF | vitkit share of matmul peak |")
    print("|---|---|---:|---:|---:|---:|")
    for variant, mode, ours_ips, hf_ips, ratio, share in rows:
        print(f"| ViT-{variant} | {mode} | {ours_ips:.2f} | {hf_ips:.2f} | {ratio:.2f}x | {share:.0%} |")


if __name__ == "__main__":
    main()
