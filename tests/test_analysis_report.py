"""report.html renders in a real headless browser with every inline image drawn (skips without chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit import create_model, save
from vitkit.analysis import analyze_checkpoint

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((found for found in map(shutil.which, BROWSERS) if found), None)
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="no chromium on PATH (Debian: apt-get install -y chromium); report.html not rendered"
)


def browser(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Run headless chromium offline with a throwaway profile."""
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
    ]  # fmt: skip
    return subprocess.run([BROWSER, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


def body_marks(dom: str) -> dict[str, int]:
    """The data-images-* attributes the page's script sets on <body> after load."""
    body = re.search(r"<body[^>]*>", dom)
    assert body, f"no <body> in the dumped DOM: {dom[:500]!r}"
    return {key: int(value) for key, value in re.findall(r'data-images-(\w+)="(\d+)"', body.group(0))}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report for a tiny GAP model with 4 heads on two images whose names need escaping."""
    root = tmp_path_factory.mktemp("report")
    torch.manual_seed(0)
    model = create_model(
        "mu/8", img_size=32, num_classes=3, depth=2, hidden_dim=32, mlp_dim=32, num_heads=4, pool="gap"
    )
    save(model, root / "ckpt", class_names=["a & b", "<c>", "d"])
    paths = []
    for index in range(2):
        paths.append(root / f"photo {index}.png")
        pixels = np.random.default_rng(index).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(paths[-1])
    analyze_checkpoint(root / "ckpt", root / "out", images=paths)
    return root / "out" / "report.html"


def test_report_is_one_file_with_escaped_labels(report):
    page = report.read_text()
    document = json.loads((report.parent / "analysis.json").read_text())
    assert page.count("<img ") == 2 + 3  # one per image, three model-level figures
    assert "&lt;c&gt;" in page and "a &amp; b" in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing loaded from outside the page
    assert len(document["images"]) == 2


@needs_browser
def test_report_renders_every_image_in_headless_chromium(report, tmp_path):
    url = report.resolve().as_uri()
    result = browser("--virtual-time-budget=10000", "--dump-dom", url, profile=tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    assert body_marks(result.stdout) == {"total": 5, "drawn": 5, "broken": 0}
    shot = tmp_path / "shot.png"
    result = browser("--window-size=1100,1600", f"--screenshot={shot}", url, profile=tmp_path / "profile")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # the page drew content, not a blank canvas


@needs_browser
def test_broken_image_is_detected_by_the_marker(report, tmp_path):
    """Control for the marker script: a corrupt inline PNG must be counted as broken."""
    page = report.read_text().replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    broken = tmp_path / "broken.html"
    broken.write_text(page)
    result = browser("--virtual-time-budget=10000", "--dump-dom", broken.as_uri(), profile=tmp_path / "profile")
    assert body_marks(result.stdout) == {"total": 5, "drawn": 4, "broken": 1}
