"""Training images/s at 128 px of candidate photo models: forward, backward and AdamW step on random images.

    .venv/bin/python benchmarks/speed/photos_speed.py [NAME[:field=value...] ...] [--batch 64] [--threads 1]

bf16 autocast (what `precision: auto` picks on a CPU with AVX512-BF16 or AMX), batch 64, 10 classes; 2 warm-up
steps, then the mean of 4. A name is anything `create_model` takes, with ViT fields after colons
("Ti/16:depth=6:mlp_dim=384:spt=1"). Not a test: the numbers depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vitkit import create_model

DEFAULT = ["xresnet18", "xresnet18x0.5", "xresnet10", "xresnet26", "Ti/16", "conv4+Ti/16", "xres4+Ti/16"]


def build(spec: str, size: int) -> torch.nn.Module:
    """The model a NAME[:field=value...] spec names, for 10 classes at `size` px."""
    name, *fields = spec.split(":")
    overrides = {}
    for field in fields:
        key, value = field.split("=")
        overrides[key] = bool(int(value)) if key in ("spt", "lsa") else int(value) if value.isdigit() else value
    if name.startswith("xresnet"):
        return create_model(name, num_classes=10, **overrides)
    return create_model(name, num_classes=10, img_size=size, **overrides)


def images_per_s(model: torch.nn.Module, batch: int, size: int) -> float:
    """Training throughput of `model` at `size` px."""
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    images, labels = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(4):
        step()
    return 4 * batch / (time.perf_counter() - start)


def main() -> None:
    """One line per model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for spec in args.models:
        model = build(spec, args.size)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(
            f"{spec}: {images_per_s(model, args.batch, args.size):.1f} images/s ({params:.2f}M parameters)", flush=True
        )


if __name__ == "__main__":
    main()
