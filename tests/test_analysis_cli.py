"""`vitkit analyze` end to end on tiny saved models: files written, JSON content, inputs, and every user error."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit import create_model, save
from vitkit.analysis import inputs
from vitkit.analysis.inputs import pick_dataset_images
from vitkit.cli import main as cli
from vitkit.inference.loading import METADATA

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture
def vitkit(monkeypatch):
    """Run `vitkit ...` in-process with only the analyze command registered (siblings land independently)."""
    assert cli.COMMANDS["analyze"] == "vitkit.cli.analyze"
    monkeypatch.setattr(cli, "COMMANDS", {"analyze": "vitkit.cli.analyze"})
    return cli.main


def save_tiny(
    path: Path, pool: str = "token", posemb: str = "learned", img_size: int = 16, metadata: dict | None = None
) -> Path:
    """Save a 2-layer, 2-head ViT with 4x4 patches and three named classes."""
    torch.manual_seed(0)
    model = create_model(
        "mu/4", img_size=img_size, num_classes=3, depth=2, hidden_dim=16, mlp_dim=32, num_heads=2,
        pool=pool, posemb=posemb, zero_init_head=False,
    )  # fmt: skip
    return save(model, path, class_names=CLASSES, metadata=metadata)


def write_image(path: Path, seed: int, size=(20, 28)) -> Path:
    """A small random RGB image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_analyze_writes_pngs_report_and_json(tmp_path, vitkit, capsys):
    checkpoint = save_tiny(tmp_path / "ckpt")
    images = [write_image(tmp_path / f"img{i}.png", i) for i in range(2)]
    out = tmp_path / "out"
    assert vitkit(["analyze", str(checkpoint), "--images", *map(str, images), "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    document = json.loads((out / "analysis.json").read_text())
    distance = np.array(document["mean_attention_distance"])
    assert distance.shape == (2, 2)  # layers x heads
    assert np.all((distance > 0) & (distance < np.hypot(16, 16)))
    assert set(document["posemb_similarity"]) == {"posemb", "same_row_or_col", "other"}
    assert [Path(image["path"]).name for image in document["images"]] == ["img0.png", "img1.png"]
    for image in document["images"]:
        assert len(image["top5"]) == 3  # three classes: the top 5 are all of them
        assert {p["label"] for p in image["top5"]} == set(CLASSES)
        assert sum(p["probability"] for p in image["top5"]) == pytest.approx(1.0, abs=1e-4)
        assert (out / image["figure"]).read_bytes().startswith(b"\x89PNG")
    for name in ("posemb_similarity.png", "embedding_filters.png", "mean_attention_distance.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch


def test_run_directory_gap_model_at_another_resolution(tmp_path, vitkit):
    """A run dir resolves to checkpoints/best and brings its normalisation; GAP + sin-cos at 24x24 works."""
    run = tmp_path / "run"
    data = {"img_size": 16, "mean": [0.4, 0.45, 0.5], "std": [0.2, 0.25, 0.3]}
    save_tiny(run / "checkpoints" / "best", pool="gap", posemb="sincos_2d", metadata={"data": data})
    image = write_image(tmp_path / "a.jpg", 0)
    out = tmp_path / "out"
    assert vitkit(["analyze", str(run), "--images", str(image), "--out", str(out), "--img-size", "24"]) == 0
    document = json.loads((out / "analysis.json").read_text())
    assert document["normalization"] == {"mean": [0.4, 0.45, 0.5], "std": [0.2, 0.25, 0.3], "source": METADATA}
    assert document["model"]["pool"] == "gap" and document["model"]["analysed_at"] == [24, 24]
    similarity = document["posemb_similarity"]
    assert similarity["same_row_or_col"] > similarity["other"]


def test_dataset_pick_is_deterministic_and_spread_across_classes(tmp_path):
    for name in ("b_dog", "a_cat", "c_bird"):
        for index in range(2):
            write_image(tmp_path / "val" / name / f"{index}.png", index)
    (tmp_path / "val" / "a_cat" / "notes.txt").write_text("not an image")
    picks = pick_dataset_images(tmp_path / "val", 4)
    assert [f"{p.parent.name}/{p.name}" for p in picks] == ["a_cat/0.png", "b_dog/0.png", "c_bird/0.png", "a_cat/1.png"]
    assert pick_dataset_images(tmp_path, 4) == picks  # a folder holding val/ reads that split
    assert len(pick_dataset_images(tmp_path / "val", 100)) == 6


def test_data_option_without_images_and_without_position_embedding(tmp_path, vitkit):
    checkpoint = save_tiny(tmp_path / "ckpt", posemb="none")
    for name in CLASSES:
        write_image(tmp_path / "val" / name / "0.png", 1)
    out = tmp_path / "out"
    assert (
        vitkit(["analyze", str(checkpoint), "--data", str(tmp_path / "val"), "--num-images", "2", "--out", str(out)])
        == 0
    )
    document = json.loads((out / "analysis.json").read_text())
    assert len(document["images"]) == 2
    assert document["posemb_similarity"] is None
    assert not (out / "posemb_similarity.png").exists()
    assert "no position embedding" in (out / "report.html").read_text()


@pytest.mark.parametrize("stem", ["cct2", "C20"])
def test_hybrids_are_analysed_without_rgb_filters(tmp_path, vitkit, stem):
    """A hybrid's tokens come from a CNN: attention and E_pos as usual, no embedding-filter figure (no crash)."""
    torch.manual_seed(0)
    model = create_model(f"{stem}+Mini/4", img_size=16, num_classes=3, depth=2, hidden_dim=16, mlp_dim=32, num_heads=2)
    checkpoint = save(model, tmp_path / "ckpt", class_names=CLASSES)
    out = tmp_path / "out"
    assert (
        vitkit(["analyze", str(checkpoint), "--images", str(write_image(tmp_path / "a.png", 0)), "--out", str(out)])
        == 0
    )
    document = json.loads((out / "analysis.json").read_text())
    assert document["embedding_filter_components"] is None and "embedding_filters" not in document["figures"]
    assert np.array(document["mean_attention_distance"]).shape == (2, 2)
    assert (out / "posemb_similarity.png").exists() and not (out / "embedding_filters.png").exists()
    assert "no RGB filters" in (out / "report.html").read_text()


def write_fake_cifar10(folder: Path, labels: list[int]) -> None:
    """A CIFAR-10 python folder with one image per training batch and `labels` as the test batch."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}, protocol=2))
    files = {f"data_batch_{i}": [i - 1] for i in range(1, 6)} | {"test_batch": labels}
    for name, batch_labels in files.items():
        data = rng.integers(0, 256, (len(batch_labels), 3 * 32 * 32), dtype=np.uint8)
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": batch_labels}, protocol=2))


def test_cifar_folder_images_are_exported_and_analysed(tmp_path, vitkit):
    checkpoint = save_tiny(tmp_path / "ckpt", img_size=32)
    write_fake_cifar10(tmp_path / "cifar-10-batches-py", labels=[0, 1, 0, 2, 1, 0])
    out = tmp_path / "out"
    assert vitkit(["analyze", str(checkpoint), "--data", str(tmp_path), "--num-images", "4", "--out", str(out)]) == 0
    expected = ["000_airplane_0.png", "001_automobile_1.png", "002_bird_3.png", "003_airplane_2.png"]
    assert sorted(p.name for p in (out / "inputs").iterdir()) == expected
    document = json.loads((out / "analysis.json").read_text())
    assert [Path(image["path"]).name for image in document["images"]] == expected


def test_error_for_a_dataset_that_is_not_one(tmp_path, vitkit, capsys):
    checkpoint = save_tiny(tmp_path / "ckpt")
    (tmp_path / "empty").mkdir()
    assert vitkit(["analyze", str(checkpoint), "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "expected an ImageFolder layout" in capsys.readouterr().err


def test_non_square_inputs_are_cropped_to_the_aspect_ratio_and_normalised(tmp_path):
    """A non-square analysis size: decode, centre-crop to the aspect ratio, resize, normalise; bad files skipped."""
    grey = tmp_path / "grey.png"
    Image.new("L", (30, 10), color=51).save(grey)  # greyscale in, RGB out
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    batch, good, skipped = inputs.load_images([grey, bad], (8, 12), (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    assert batch.shape == (1, 3, 8, 12) and good == [grey]
    expected = (torch.tensor([0.2, 0.2, 0.2]) - torch.tensor([0.1, 0.2, 0.3])) / 0.5
    torch.testing.assert_close(batch[0, :, 4, 6], expected, atol=1e-5, rtol=0)
    assert skipped == [(bad, "zero-byte file")]
    assert inputs.fit_image(Image.new("RGB", (30, 10)), (8, 12)).size == (12, 8)


def test_error_without_images(tmp_path, vitkit, capsys):
    checkpoint = save_tiny(tmp_path / "ckpt")
    assert vitkit(["analyze", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    assert "no images to analyse: name image files with --images" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:load_images")
def test_error_for_an_unreadable_image(tmp_path, vitkit, capsys):
    checkpoint = save_tiny(tmp_path / "ckpt")
    good = write_image(tmp_path / "good.png", 0)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    assert vitkit(["analyze", str(checkpoint), "--images", str(good), str(bad), "--out", str(tmp_path / "o")]) == 2
    assert f"cannot read image {bad}" in capsys.readouterr().err


def test_error_for_a_missing_image(tmp_path, vitkit, capsys):
    checkpoint = save_tiny(tmp_path / "ckpt")
    missing = tmp_path / "missing.png"
    assert vitkit(["analyze", str(checkpoint), "--images", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert f"image {missing} not found" in capsys.readouterr().err


def test_error_for_a_missing_checkpoint(tmp_path, vitkit, capsys):
    image = write_image(tmp_path / "a.png", 0)
    missing = tmp_path / "no_such_run"
    assert vitkit(["analyze", str(missing), "--images", str(image), "--out", str(tmp_path / "o")]) == 2
    assert f"checkpoint {missing} not found" in capsys.readouterr().err


def test_error_for_a_resolution_the_patches_do_not_tile(tmp_path, vitkit, capsys):
    checkpoint = save_tiny(tmp_path / "ckpt")
    image = write_image(tmp_path / "a.png", 0)
    assert (
        vitkit(["analyze", str(checkpoint), "--images", str(image), "--out", str(tmp_path / "o"), "--img-size", "18"])
        == 2
    )
    assert "image size 18 is not divisible by patch size 4" in capsys.readouterr().err
