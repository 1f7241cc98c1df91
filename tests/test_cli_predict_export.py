"""`vitkit predict --precision` (and the line saying what ran) and `vitkit export --quantize` writing --out as int8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli.main import main
from vitkit.data import load_images

MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]


def tiny_checkpoint(tmp_path: Path, precision: str = "bf16") -> tuple[Path, torch.nn.Module]:
    """A saved 2-layer ViT with O(1) logits, recorded as trained in `precision`."""
    torch.manual_seed(0)
    model = vitkit.create_model("Mini/4", img_size=16, depth=2, num_classes=5, zero_init_head=False).eval()
    with torch.no_grad():
        model.head.weight.mul_(10)  # logits of a few units: bf16 rounding shows in the probabilities
    metadata = {"precision": precision, "data": {"img_size": 16, "mean": MEAN, "std": STD}}
    return vitkit.save(model, tmp_path / "ckpt", class_names=[f"c{i}" for i in range(5)], metadata=metadata), model


def images(folder: Path, count: int = 3) -> list[str]:
    """`count` random 16x16 RGB PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        files.append(str(folder / f"{i}.png"))
    return files


def predict_json(capsys, *argv: str) -> dict:
    assert main(["predict", *argv, "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_runs_in_the_trained_precision_unless_told_and_says_so(tmp_path, capsys):
    checkpoint, model = tiny_checkpoint(tmp_path)
    files = images(tmp_path / "images")
    default = predict_json(capsys, str(checkpoint), *files)
    assert (default["backend"], default["device"], default["precision"]) == ("torch", "cpu", "bf16")
    fp32 = predict_json(capsys, str(checkpoint), *files, "--precision", "fp32")
    assert fp32["precision"] == "fp32"
    batch, _, _ = load_images(files, 16, MEAN, STD)
    with torch.no_grad():
        expected = model(batch).softmax(1)
    for prediction, row in zip(fp32["predictions"], expected, strict=True):
        for top in prediction["top_k"]:
            assert top["probability"] == pytest.approx(row[int(top["label"][1:])].item(), abs=2e-6)
    differences = [
        abs(a["probability"] - b["probability"])
        for p, q in zip(default["predictions"], fp32["predictions"], strict=True)
        for a, b in zip(p["top_k"], q["top_k"], strict=True)
    ]
    assert max(differences) > 1e-4  # bf16 did run

    assert main(["predict", str(checkpoint), files[0], "--device", "cpu", "--precision", "fp32"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{checkpoint}: torch on cpu, fp32"


def test_export_quantize_writes_int8_to_out_and_keeps_fp32_only_when_asked(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vitkit.export import read_metadata

    checkpoint, _ = tiny_checkpoint(tmp_path, "fp32")
    out = tmp_path / "deploy" / "m.onnx"
    assert main(["export", str(checkpoint), "--out", str(out), "--quantize", "dynamic"]) == 0
    printed = capsys.readouterr().out
    assert read_metadata(out).precision == "int8-dynamic"
    assert sorted(p.name for p in out.parent.iterdir()) == ["config.json", "m.onnx"]
    assert f"{out}: int8 (dynamic" in printed and "fp32 model: not kept (--keep-fp32 FILE keeps it)" in printed

    kept = tmp_path / "deploy" / "m.fp32.onnx"
    assert main(["export", str(checkpoint), "--out", str(out), "--quantize", "dynamic", "--keep-fp32", str(kept)]) == 0
    assert f"{kept}: fp32, kept (--keep-fp32)" in capsys.readouterr().out
    assert read_metadata(kept).precision == "fp32" and read_metadata(out).precision == "int8-dynamic"
    assert json.loads((out.parent / "config.json").read_text())["precision"] == "int8-dynamic"

    assert main(["predict", str(out), str(images(tmp_path / "images")[0])]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{out}: onnxruntime on cpu, int8-dynamic"
    assert main(["predict", str(out), str(images(tmp_path / "images")[0]), "--precision", "fp32"]) == 2
    assert "--precision is for PyTorch checkpoints" in capsys.readouterr().err


def test_keep_fp32_needs_quantize(tmp_path, capsys):
    assert main(["export", "ckpt", "--out", str(tmp_path / "m.onnx"), "--keep-fp32", str(tmp_path / "f.onnx")]) == 2
    assert "--keep-fp32 is for --quantize (without it, --out is the fp32 model)" in capsys.readouterr().err


def test_keep_fp32_must_be_another_onnx_file(tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    assert main(["export", "ckpt", "--out", out, "--quantize", "dynamic", "--keep-fp32", out]) == 2
    assert "--keep-fp32 names the fp32 .onnx file, apart from --out" in capsys.readouterr().err
