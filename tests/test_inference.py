"""The inference layer: one checkpoint resolution and preprocessing for predict, eval and analyze."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vitkit import create_model, save
from vitkit.analysis import analyze_checkpoint
from vitkit.cli.main import main
from vitkit.data import load_images
from vitkit.inference import (
    evaluate_checkpoint,
    load_for_inference,
    predict_files,
    predict_logits,
    read_preprocessing,
    resolve_checkpoint,
    select_eval_data,
)
from vitkit.inference.loading import METADATA, NO_METADATA, Preprocessing

CLASSES = ["bird", "cat", "dog"]
MEAN, STD = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]  # far from 0.5, so a wrong normalisation changes the logits


def tiny_model(num_classes: int = 3):
    """A 2-layer ViT on 16 px inputs with 4x4 patches and a random (non-zero) head."""
    torch.manual_seed(0)
    return create_model(
        "Mini/4", img_size=16, num_classes=num_classes, depth=2, hidden_dim=16, mlp_dim=32, num_heads=2,
        zero_init_head=False,
    )  # fmt: skip


def save_trained(path: Path, data_path: str = "elsewhere/train", **data) -> Path:
    """A checkpoint with the metadata `vitkit train` writes (mean/std != 0.5)."""
    recorded = {"path": data_path, "absolute_path": "/nonexistent/train", "img_size": 16, "mean": MEAN, "std": STD}
    recorded |= {"val_fraction": 0.2, "seed": 1, **data}
    metadata = {"precision": "fp32", "data": recorded, "training": {"data": recorded | {"num_workers": 0}}}
    return save(tiny_model(), path, class_names=CLASSES, metadata=metadata)


def write_image(path: Path, seed: int, size: int = 18) -> Path:
    """A random RGB PNG; 18 px is what a 16 px model's evaluation view centre-crops by 87.5%."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def image_folder(root: Path, per_class: int, seed: int = 0) -> list[Path]:
    """root/<class>/<i>.png for the three classes; the files in ImageFolder order (sorted classes and names)."""
    return [
        write_image(root / name / f"{i}.png", seed + 100 * label + i)
        for label, name in enumerate(CLASSES)
        for i in range(per_class)
    ]


# --- predict, eval and analyze agree ------------------------------------------------------------------------------


def test_predict_and_eval_give_the_same_logits(tmp_path: Path) -> None:
    checkpoint = save_trained(tmp_path / "ckpt")
    image_folder(tmp_path / "data" / "train", 1)
    val_files = image_folder(tmp_path / "data" / "val", 2, seed=50)
    evaluation = evaluate_checkpoint(checkpoint, str(tmp_path / "data"), device="cpu", keep_logits=True)
    assert evaluation.data.split == "val" and evaluation.result.images == len(val_files)
    loaded = load_for_inference(checkpoint, "cpu")
    logits, good, skipped = predict_logits(loaded, [str(p) for p in val_files])
    assert good == [str(p) for p in val_files] and skipped == []
    torch.testing.assert_close(evaluation.result.logits, logits)
    # Both used the recorded normalisation: mean = std = 0.5 gives other logits.
    batch, _, _ = load_images(good, 16, (0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        assert not torch.allclose(loaded.model(batch), logits, atol=1e-3)


def test_analyze_prepares_a_copied_checkpoint_like_predict(tmp_path: Path) -> None:
    """A checkpoint copied out of its run directory keeps its normalisation: it is in the checkpoint's metadata."""
    save_trained(tmp_path / "run" / "checkpoints" / "best")
    copy = Path(shutil.copytree(tmp_path / "run" / "checkpoints" / "best", tmp_path / "copied"))
    image = write_image(tmp_path / "a.png", 3, size=30)
    document = analyze_checkpoint(copy, tmp_path / "out", images=[image])
    prep = load_for_inference(copy, "cpu").preprocessing
    assert document["normalization"] == {"mean": MEAN, "std": STD, "source": METADATA} == {
        "mean": list(prep.mean), "std": list(prep.std), "source": prep.source
    }  # fmt: skip
    assert document["model"]["analysed_at"] == [prep.img_size, prep.img_size] == [16, 16]
    predictions, _, _ = predict_files(copy, [str(image)], top_k=3, device="cpu")
    analysed = {p["label"]: p["probability"] for p in document["images"][0]["top5"]}
    predicted = dict(zip(predictions[0].labels, predictions[0].probabilities, strict=True))
    assert analysed.keys() == predicted.keys()
    for label, probability in predicted.items():
        assert analysed[label] == pytest.approx(probability, abs=1e-5)


# --- which images eval reads ----------------------------------------------------------------------------------------


def test_eval_reads_other_data_whole(tmp_path: Path) -> None:
    """A test folder (class sub-folders, no train/ or val/) is evaluated whole, not a seeded share of it."""
    checkpoint = save_trained(tmp_path / "ckpt")
    files = image_folder(tmp_path / "test", 5)
    result, _, data, _ = evaluate_checkpoint(checkpoint, str(tmp_path / "test"), device="cpu")
    assert result.images == 15 and data.split == "all"
    assert data.description.startswith(f"all images of {tmp_path / 'test'} (not the checkpoint's training data")
    predictions, _, _ = predict_files(checkpoint, [str(p) for p in files], top_k=1, device="cpu")
    hits = sum(p.labels[0] == Path(p.path).parent.name for p in predictions)
    assert result.top1 == pytest.approx(100 * hits / 15)
    assert sum(map(sum, result.confusion.tolist())) == 15
    # Asked for, the seeded split applies: 20% of each class of 5 (the checkpoint's val_fraction).
    seeded = evaluate_checkpoint(checkpoint, str(tmp_path / "test"), split="val", device="cpu")
    assert seeded.result.images == 3 and "0.2 of each class held out for val, seed 1" in seeded.data.description


def test_eval_of_the_training_data_defaults_to_its_held_out_split(tmp_path: Path) -> None:
    image_folder(tmp_path / "train_data", 5)
    checkpoint = save_trained(tmp_path / "ckpt", data_path=str(tmp_path / "train_data"))
    for given in (None, str(tmp_path / "train_data"), str(tmp_path / "train_data" / ".." / "train_data")):
        result, _, data, _ = evaluate_checkpoint(checkpoint, given, device="cpu")
        assert (result.images, data.split) == (3, "val") and data.description.endswith("seed 1, as in training)")
    assert evaluate_checkpoint(checkpoint, split="all", device="cpu").result.images == 15
    assert evaluate_checkpoint(checkpoint, split="train", device="cpu").result.images == 12


def test_eval_cli_says_how_many_images_and_from_where(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint = save_trained(tmp_path / "ckpt")
    image_folder(tmp_path / "test", 2)
    assert main(["eval", str(checkpoint), "--data", str(tmp_path / "test"), "--device", "cpu"]) == 0
    assert f"{checkpoint}: 6 images: all images of {tmp_path / 'test'}" in capsys.readouterr().out
    report = json.loads((tmp_path / "eval_all.json").read_text())
    assert report["split"] == "all" and report["images"] == 6 and report["data"] == str(tmp_path / "test")
    assert report["preprocessing"] == {"img_size": 16, "mean": MEAN, "std": STD, "precision": "fp32",
                                       "source": METADATA}  # fmt: skip


def test_eval_needs_data_when_the_checkpoint_records_none(tmp_path: Path) -> None:
    checkpoint = save(tiny_model(), tmp_path / "bare", class_names=CLASSES)
    with pytest.raises(ValueError, match="does not record the data it was trained on.*pass --data PATH"):
        evaluate_checkpoint(checkpoint, device="cpu")


def test_eval_refuses_an_unknown_split(tmp_path: Path) -> None:
    prep = read_preprocessing(save_trained(tmp_path / "ckpt"), tiny_model())
    with pytest.raises(ValueError, match="--split must be one of val, train, all, got 'test'"):
        select_eval_data(prep, str(tmp_path), "test")


def test_predict_and_eval_need_a_classification_head(tmp_path: Path) -> None:
    checkpoint = save(tiny_model(num_classes=0), tmp_path / "features")
    image = write_image(tmp_path / "a.png", 0)
    with pytest.raises(ValueError, match="has no classification head"):
        predict_files(checkpoint, [str(image)], device="cpu")
    with pytest.raises(ValueError, match="has no classification head"):
        evaluate_checkpoint(checkpoint, str(tmp_path), device="cpu")


# --- finding the checkpoint ------------------------------------------------------------------------------------------


def test_resolve_checkpoint_prefers_best_then_last(tmp_path: Path) -> None:
    run = tmp_path / "run"
    last = save_trained(run / "checkpoints" / "last")
    assert resolve_checkpoint(run) == last
    best = save_trained(run / "checkpoints" / "best")
    assert resolve_checkpoint(run) == best and resolve_checkpoint(last) == last
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"any file: its format is told by `vitkit.load`")
    assert resolve_checkpoint(weights) == weights


def test_resolve_checkpoint_errors_say_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint .*nowhere not found.*run directory"):
        resolve_checkpoint(tmp_path / "nowhere")
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match="neither a run directory .* nor a checkpoint directory"):
        resolve_checkpoint(tmp_path / "notes")
    (tmp_path / "run" / "checkpoints" / "best").mkdir(parents=True)
    with pytest.raises(ValueError, match="run directory without a readable checkpoint"):
        resolve_checkpoint(tmp_path / "run")


def timm_weights(model) -> dict[str, torch.Tensor]:
    """vitkit -> timm key names (timm calls the learned position table `pos_embed`)."""
    return {("pos_embed" if k == "pos_embed.weight" else k): v.clone() for k, v in model.state_dict().items()}


def test_hub_id_resolves_to_the_cached_files_and_their_settings(tmp_path: Path, monkeypatch) -> None:
    """A timm hub repository: weights and a config.json whose pretrained_cfg gives the normalisation."""
    save_file(timm_weights(tiny_model()), tmp_path / "model.safetensors")
    pretrained_cfg = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": [3, 16, 16]}
    config = {"architecture": "vit_tiny", "num_classes": 3, "pretrained_cfg": pretrained_cfg,
              "model_args": {"num_heads": 2}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename, **kw: str(tmp_path / filename))
    model, prep, path, _ = load_for_inference("timm:vit_tiny.test", "cpu")
    assert path == tmp_path and model.config.num_classes == 3
    assert (prep.mean, prep.std) == (tuple(pretrained_cfg["mean"]), tuple(pretrained_cfg["std"]))
    assert prep.source == "config.json (timm pretrained_cfg)" and prep.from_metadata


# --- preprocessing of checkpoints without metadata ----------------------------------------------------------------


def test_foreign_weights_get_their_format_convention_and_say_so(tmp_path: Path, caplog) -> None:
    weights = tmp_path / "vit.safetensors"
    torch.manual_seed(0)
    timm_width = create_model("Ti/4", img_size=16, num_classes=3, depth=1, mlp_dim=32)  # 192 wide: 3 heads in timm
    save_file(timm_weights(timm_width), weights)
    with caplog.at_level(logging.WARNING, logger="vitkit.inference"):
        prep = load_for_inference(weights, "cpu").preprocessing
    assert (prep.mean, prep.std, prep.img_size, prep.precision) == ((0.5,) * 3, (0.5,) * 3, 16, "fp32")
    assert prep.source.startswith(f"{NO_METADATA}: timm's ViT default") and not prep.from_metadata
    assert "records no preprocessing" in caplog.text and "timm's ViT default" in caplog.text
    converted = save(create_model(pretrained=weights), tmp_path / "converted", metadata={"converted_from": "x"})
    assert "timm's ViT default" in load_for_inference(converted, "cpu").preprocessing.source
    bare = save(tiny_model(), tmp_path / "bare")
    assert load_for_inference(bare, "cpu").preprocessing.source == f"{NO_METADATA}: vitkit's DataConfig default"


def test_transformers_directory_uses_its_preprocessor_config(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path)
    settings = {"do_normalize": True, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(settings))
    prep = load_for_inference(tmp_path, "cpu").preprocessing
    assert (prep.mean, prep.std, prep.source) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "preprocessor_config.json")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    assert load_for_inference(tmp_path, "cpu").preprocessing.std == (1.0, 1.0, 1.0)


def test_metadata_is_read_defensively(tmp_path: Path) -> None:
    """Unknown keys are ignored, fp16 runs are evaluated in fp32, a malformed value is an error naming it."""
    checkpoint = save_trained(tmp_path / "ckpt", future_key=1)
    document = json.loads((checkpoint / "config.json").read_text())
    document["metadata"]["precision"] = "fp16"
    (checkpoint / "config.json").write_text(json.dumps(document))
    prep = read_preprocessing(checkpoint, tiny_model())
    assert isinstance(prep, Preprocessing) and prep.precision == "fp32" and prep.class_names is None
    assert select_eval_data(prep)[0].val_fraction == 0.2
    document["metadata"]["data"]["std"] = [0.5, 0.5]
    (checkpoint / "config.json").write_text(json.dumps(document))
    with pytest.raises(
        ValueError, match=r"std must be 3 numbers \(one per input channel of the model\), got \[0.5, 0.5\]"
    ):
        read_preprocessing(checkpoint, tiny_model())


def test_inference_and_analysis_do_not_import_training() -> None:
    """The layer sits below training: importing it (or analysis, which uses it) must not pull training in."""
    code = "import sys, vitkit.analysis, vitkit.inference; print(any('vitkit.training' in m for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
