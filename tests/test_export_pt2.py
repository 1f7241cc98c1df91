"""`vitkit export --format pt2`: an AOTInductor package of a tiny ViT matches eager PyTorch, carries the metadata,
and runs through predict; the errors users can hit. One compile for the module: 18 s with an empty inductor cache,
12 s with a warm one (2 busy cores), so not marked slow; the --dynamic-size test compiles again and is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli.main import main
from vitkit.errors import UsageError
from vitkit.export import Pt2Model, backend_for, export_pt2, read_metadata

MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]
CLASSES = [f"c{i}" for i in range(5)]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torch.nn.Module]:
    """A tiny 2-block ViT checkpoint and its .pt2 package (compiled once for every test here)."""
    root = tmp_path_factory.mktemp("pt2")
    model = vitkit.create_model("mu/4", img_size=16, depth=2, num_classes=5, zero_init_head=False).eval()
    path = vitkit.save(
        model, root / "ckpt", class_names=CLASSES, metadata={"data": {"img_size": 16, "mean": MEAN, "std": STD}}
    )
    out = root / "out" / "model.pt2"
    assert main(["export", str(path), "--format", "pt2", "--out", str(out)]) == 0
    return path, out, model


def test_pt2_matches_torch_at_batch_1_and_4(package: tuple[Path, Path, torch.nn.Module]) -> None:
    _, out, model = package
    compiled = Pt2Model(out)
    for batch in (1, 4):
        images = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            expected = model(images).numpy()
        assert np.abs(expected).max() > 1e-3  # a zero head would make parity trivial
        np.testing.assert_allclose(compiled.run(images)[0], expected, atol=1e-4, rtol=0)


def test_pt2_metadata_in_package_and_beside(package: tuple[Path, Path, torch.nn.Module]) -> None:
    path, out, _ = package
    meta = read_metadata(out)
    assert (meta.img_size, meta.mean, meta.std, meta.input, meta.class_names) == (16, MEAN, STD, "float", CLASSES)
    assert meta.version == vitkit.__version__ and len(meta.source_sha256) == 64
    assert json.loads((out.parent / "config.json").read_text())["source_sha256"] == meta.source_sha256


def test_predict_on_pt2_equals_predict_on_checkpoint(
    package: tuple[Path, Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, out, _ = package
    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        files.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(files[-1])
    assert main(["predict", str(path), *files, "--json", "--device", "cpu"]) == 0
    reference = json.loads(capsys.readouterr().out)["predictions"]
    assert main(["predict", str(out), *files, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["predictions"]
    for r, g in zip(reference, got, strict=True):
        assert [t["label"] for t in r["top_k"]] == [t["label"] for t in g["top_k"]]
        for a, b in zip(r["top_k"], g["top_k"], strict=True):
            assert abs(a["probability"] - b["probability"]) < 1e-5


def test_pt2_bad_inputs(
    package: tuple[Path, Path, torch.nn.Module], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, out, _ = package
    assert main(["export", str(path), "--format", "pt2", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "use --out" in capsys.readouterr().err
    assert (
        main(["export", str(path), "--format", "pt2", "--quantize", "dynamic", "--out", str(tmp_path / "m.pt2")]) == 2
    )
    assert "--quantize: ONNX only" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--backend onnxruntime runs .onnx files"):
        backend_for("onnxruntime", out)
    assert backend_for(None, out) == "aoti" and backend_for(None, "runs/x") == "torch"


def test_torch_without_aoti_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch._inductor

    monkeypatch.delattr(torch._inductor, "aoti_compile_and_package")
    with pytest.raises(UsageError, match="aoti_compile_and_package missing from torch"):
        export_pt2("unused", tmp_path / "m.pt2")


@pytest.mark.slow  # a second compile: 27 s on 2 busy cores
def test_pt2_dynamic_size_matches_torch_at_two_resolutions(
    package: tuple[Path, Path, torch.nn.Module], tmp_path: Path
) -> None:
    path, _, model = package
    out, meta = export_pt2(path, tmp_path / "dynamic.pt2", dynamic_size=True)
    assert meta.dynamic_size
    compiled = Pt2Model(out)
    for side in (16, 32):
        for batch in (1, 4):
            images = torch.randn(batch, 3, side, side)
            with torch.no_grad():
                expected = model(images).numpy()
            np.testing.assert_allclose(compiled.run(images)[0], expected, atol=1e-4, rtol=0)
