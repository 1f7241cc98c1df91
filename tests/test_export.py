"""ONNX export: parity with PyTorch for every family, metadata round trip, ONNX-backed predict, bad inputs."""

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

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from vitkit.export import OnnxModel, export_onnx, quantize_onnx, read_metadata  # noqa: E402

MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]
TINY = {"depth": 2, "num_classes": 5, "zero_init_head": False}
FAMILIES = {
    "vit-token-learned": ("mu/4", 16, TINY),
    "vit-gap-sincos": ("mu/4", 16, {**TINY, "pool": "gap", "posemb": "sincos_2d"}),
    "vit-learned2d": ("mu/4", 16, {**TINY, "posemb": "learned_2d"}),
    "vit-none": ("mu/4", 16, {**TINY, "posemb": "none"}),
    "deit": ("mu/4", 16, {**TINY, "distilled": True}),
    "hybrid-cifar": ("C20+mu/4", 32, TINY),
    "hybrid-r26": ("R26+mu/16", 32, TINY),
    "tokenizer-cct2": ("cct2+Mini/4", 32, TINY),
    "tokenizer-conv2": ("conv2+Mini/4", 32, TINY),
    "resnet20": ("resnet20", 32, {"num_classes": 5}),
    "vgg8": ("vgg8", 32, {"num_classes": 5}),
}


def checkpoint(tmp_path: Path, family: str) -> tuple[Path, torch.nn.Module, int]:
    """A saved tiny model of `family` with preprocessing metadata and class names."""
    name, size, overrides = FAMILIES[family]
    model = vitkit.create_model(name, img_size=size, **overrides).eval()
    path = vitkit.save(
        model,
        tmp_path / family,
        class_names=[f"c{i}" for i in range(5)],
        metadata={"data": {"img_size": size, "mean": MEAN, "std": STD}},
    )
    return path, model, size


def torch_outputs(model: torch.nn.Module, images: torch.Tensor) -> list[np.ndarray]:
    """The outputs the export promises: logits, and for DeiT both heads too."""
    with torch.no_grad():
        if getattr(model.config, "distilled", False):
            heads = model.forward_heads(model.forward_features(images))
            return [model(images).numpy(), heads["cls"].numpy(), heads["dist"].numpy()]
        return [model(images).numpy()]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_matches_torch_at_batch_1_and_4(tmp_path: Path, family: str) -> None:
    path, model, size = checkpoint(tmp_path, family)
    out, meta = export_onnx(path, tmp_path / "m.onnx")
    session = OnnxModel(out)
    for batch in (1, 4):
        images = torch.randn(batch, 3, size, size)
        expected, got = torch_outputs(model, images), session.run(images)
        assert len(got) == len(expected) == len(meta.outputs)
        for e, g in zip(expected, got, strict=True):
            assert np.abs(e).max() > 1e-3  # a zero head would make parity trivial
            np.testing.assert_allclose(g, e, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["vit-token-learned", "vit-gap-sincos", "vit-learned2d", "deit", "hybrid-cifar"])
def test_dynamic_size_matches_torch_at_two_resolutions(tmp_path: Path, family: str) -> None:
    path, model, size = checkpoint(tmp_path, family)
    out, meta = export_onnx(path, tmp_path / "m.onnx", dynamic_size=True)
    assert meta.dynamic_size
    session = OnnxModel(out)
    for side in (size, 2 * size):
        for batch in (1, 4):
            images = torch.randn(batch, 3, side, side)
            np.testing.assert_allclose(session.run(images)[0], torch_outputs(model, images)[0], atol=1e-4, rtol=0)


def test_fixed_size_export_bakes_a_resampled_posemb(tmp_path: Path) -> None:
    path, model, _ = checkpoint(tmp_path, "vit-token-learned")
    out, meta = export_onnx(path, tmp_path / "m.onnx", img_size=24)
    images = torch.randn(2, 3, 24, 24)
    resized = vitkit.create_model(pretrained=path, img_size=24).eval()
    np.testing.assert_allclose(OnnxModel(out).run(images)[0], torch_outputs(resized, images)[0], atol=1e-4, rtol=0)
    assert meta.img_size == 24
    with pytest.raises(Exception, match="images"):  # fixed resolution: ORT refuses another size
        OnnxModel(out).run(torch.randn(1, 3, 16, 16))


def test_metadata_round_trip(tmp_path: Path) -> None:
    path, _, _ = checkpoint(tmp_path, "deit")
    out, meta = export_onnx(path, tmp_path / "m.onnx")
    read = read_metadata(out)
    assert read == meta
    assert (read.img_size, read.mean, read.std, read.input) == (16, MEAN, STD, "float")
    assert read.class_names == [f"c{i}" for i in range(5)]
    assert read.outputs == ["logits", "logits_cls", "logits_dist"]
    assert read.version == vitkit.__version__ and len(read.source_sha256) == 64
    beside = json.loads((tmp_path / "config.json").read_text())
    assert beside["mean"] == MEAN and beside["source_sha256"] == read.source_sha256


def test_export_into_a_checkpoint_directory_keeps_its_config(tmp_path: Path, caplog) -> None:
    path, model, _ = checkpoint(tmp_path, "deit")
    before = (path / "config.json").read_text()
    out, meta = export_onnx(path, path / "model.onnx")
    assert (path / "config.json").read_text() == before  # the checkpoint still loads
    assert "kept" in caplog.text and "config.json" in caplog.text
    assert vitkit.load(path).config == model.config
    assert read_metadata(out) == meta  # the file holds its metadata itself
    export_onnx(path, tmp_path / "alone" / "m.onnx")
    export_onnx(path, tmp_path / "alone" / "m.onnx", img_size=24)  # an export's own config.json is replaced
    assert json.loads((tmp_path / "alone" / "config.json").read_text())["img_size"] == 24


def test_include_preprocessing_takes_uint8(tmp_path: Path) -> None:
    path, model, size = checkpoint(tmp_path, "vit-token-learned")
    out, meta = export_onnx(path, tmp_path / "m.onnx", include_preprocessing=True)
    assert meta.input == "uint8"
    import onnxruntime as ort

    pixels = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    normalised = (pixels.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    got = session.run(None, {"images": pixels.numpy()})[0]
    np.testing.assert_allclose(got, torch_outputs(model, normalised)[0], atol=1e-4, rtol=0)


def write_images(folder: Path, count: int, size: int) -> list[str]:
    """`count` random RGB PNGs of side `size`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        file = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(file)
        files.append(str(file))
    return files


@pytest.mark.parametrize("uint8", [False, True])
def test_predict_on_onnx_equals_predict_on_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture, uint8: bool
) -> None:
    path, _, size = checkpoint(tmp_path, "vit-token-learned")
    files = write_images(tmp_path / "images", 3, size)
    export_onnx(path, tmp_path / "m.onnx", include_preprocessing=uint8)
    assert main(["predict", str(path), *files, "--json", "--device", "cpu"]) == 0
    reference = json.loads(capsys.readouterr().out)["predictions"]
    assert main(["predict", str(tmp_path / "m.onnx"), *files, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["predictions"]
    for r, g in zip(reference, got, strict=True):
        assert [t["label"] for t in r["top_k"]] == [t["label"] for t in g["top_k"]]
        for a, b in zip(r["top_k"], g["top_k"], strict=True):
            assert abs(a["probability"] - b["probability"]) < 1e-5


def test_eval_on_onnx_equals_eval_on_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, _, size = checkpoint(tmp_path, "resnet20")
    for label in range(5):
        write_images(tmp_path / "data" / f"c{label}", 2, size)
    export_onnx(path, tmp_path / "m.onnx")
    args = ["--data", str(tmp_path / "data"), "--json", "--out", str(tmp_path / "reports")]
    assert main(["eval", str(path), *args, "--device", "cpu"]) == 0
    reference = json.loads(capsys.readouterr().out)
    assert main(["eval", str(tmp_path / "m.onnx"), *args]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["top1"] == reference["top1"] and abs(got["loss"] - reference["loss"]) < 1e-4


def test_onnx_without_metadata_names_the_missing_keys(tmp_path: Path) -> None:
    model = vitkit.create_model("mu/4", img_size=16, **TINY).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), str(tmp_path / "bare.onnx"), dynamo=True)
    with pytest.raises(UsageError, match=r"vitkit\.img_size, vitkit\.mean, vitkit\.std, vitkit\.input.*config\.json"):
        read_metadata(tmp_path / "bare.onnx")
    (tmp_path / "config.json").write_text(json.dumps({"img_size": 16, "mean": MEAN, "std": STD, "input": "float"}))
    assert read_metadata(tmp_path / "bare.onnx").img_size == 16  # the documented way to give them


def test_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, _, _ = checkpoint(tmp_path, "vit-token-learned")
    with pytest.raises(UsageError, match="not divisible by the patch size 4"):
        export_onnx(path, tmp_path / "m.onnx", img_size=18)
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["export", str(path), "--quantize", "static", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--calibration-data" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="vitkit export"):
        read_metadata(tmp_path / "nothing.onnx")


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_keeps_predictions_close(tmp_path: Path, mode: str) -> None:
    path, model, size = checkpoint(tmp_path, "vit-token-learned")
    out, _ = export_onnx(path, tmp_path / "m.onnx")
    images = torch.randn(16, 3, size, size)
    # Static ranges come from the calibration images: calibrate on the images checked, as a deployment would on
    # images like those it serves (ranges from 8 random-noise images clip the other 8 by chance).
    int8 = quantize_onnx(out, tmp_path / "m.int8.onnx", mode, iter([images[:8].numpy(), images[8:].numpy()]))
    assert read_metadata(int8).precision == f"int8-{mode}"
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert ("MatMulInteger" in ops or "DynamicQuantizeLinear" in ops) if mode == "dynamic" else "QuantizeLinear" in ops
    got, expected = OnnxModel(int8).run(images)[0], torch_outputs(model, images)[0]
    assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max()


def test_static_int8_can_keep_attention_and_head_in_fp32(tmp_path: Path) -> None:
    from vitkit.export.quantize import StaticInt8

    path, model, size = checkpoint(tmp_path, "vit-token-learned")
    out, _ = export_onnx(path, tmp_path / "m.onnx")
    images = torch.randn(8, 3, size, size)
    settings = StaticInt8(method="percentile", skip_attention=True, skip_head=True)
    int8 = quantize_onnx(out, tmp_path / "m.int8.onnx", "static", iter([images.numpy()]), static=settings)
    import onnx

    graph = onnx.load(str(int8)).graph
    weights = {init.name for init in graph.initializer}
    producer = {output: node.op_type for node in graph.node for output in node.output}
    matmuls = [node for node in graph.node if node.op_type in ("MatMul", "Gemm")]
    quantised = {node.name for node in matmuls if any(producer.get(i) == "DequantizeLinear" for i in node.input)}
    kept = [node for node in matmuls if node.name not in quantised]
    # 2 blocks: 4 weight MatMuls each (qkv, out, fc1, fc2) quantised; 2 attention MatMuls each and the head not
    assert len(quantised) == 8 and len(kept) == 2 * 2 + 1, [node.name for node in kept]
    assert sum(not any(i in weights for i in node.input) for node in kept) == 4  # Q K^T and A V: no weights
    got, expected = OnnxModel(int8).run(images)[0], torch_outputs(model, images)[0]
    assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max()
    with pytest.raises(UsageError, match="calibration method"):
        quantize_onnx(out, tmp_path / "x.onnx", "static", iter([images.numpy()]), static=StaticInt8(method="mse"))


def test_calibration_batches_are_recut_to_one_size() -> None:
    from vitkit.export.quantize import Calibration

    reader = Calibration(iter([np.zeros((16, 3, 4, 4), np.float32), np.ones((14, 3, 4, 4), np.float32)]))
    sizes = []
    while (feed := reader.get_next()) is not None:
        sizes.append(len(feed["images"]))
    assert sizes == [15, 15]  # the histogram calibrators stack batches: a short last one would fail
