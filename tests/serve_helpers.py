"""Shared pieces of the `vitkit serve` tests: a tiny checkpoint, generated images, a server on a free port."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitkit import create_model, save

CLASSES = ["cat", "dog", "bird", "fish"]


def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A 2-block ViT at 32 px with a random head (so the classes differ) and recorded preprocessing."""
    torch.manual_seed(seed)
    model = create_model(
        "Ti/8", img_size=32, num_classes=len(CLASSES), depth=2, hidden_dim=32, mlp_dim=64, num_heads=4, pool="gap"
    )
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.normal_(0, 0.5)
    metadata = {"data": {"img_size": 32, "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.3]}}
    return save(model, path, class_names=CLASSES, metadata=metadata)


def image_bytes(seed: int, size: tuple[int, int] = (48, 40), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """A random image encoded as `fmt` (different seeds give different predictions)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
