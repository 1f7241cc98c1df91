"""`vitkit convert --to hf|timm`: the written directories load in transformers and timm with vitkit's logits, come
back to vitkit unchanged, and what the target cannot compute is refused with the reason."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.cli.main import main
from vitkit.models import VisionTransformer, ViTConfig

CLASSES = ["cat", "dog", "bird"]
MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]
VARIANTS = {
    "token": {},
    "deit": {"distilled": True},
    "tanh-sincos-nobias": {"activation": "gelu_tanh", "posemb": "sincos_2d", "qkv_bias": False},
    "learned2d-nonsquare": {"posemb": "learned_2d", "img_size": (32, 24)},
}
TIMM_ONLY = {"gap": {"pool": "gap"}, "gap-none": {"pool": "gap", "posemb": "none"}}


def saved_vit(tmp_path: Path, **fields) -> tuple[Path, VisionTransformer]:
    """A tiny ViT with O(1) random parameters, saved with class names and preprocessing."""
    torch.manual_seed(0)
    config = {"img_size": 32, "patch_size": 8, "hidden_dim": 32, "depth": 2, "num_heads": 4, "mlp_dim": 64}
    model = VisionTransformer(ViTConfig(**{**config, "num_classes": 3, **fields})).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, param[0].numel() ** -0.5 if param.ndim >= 2 else 0.1)
    metadata = {"data": {"img_size": model.config.img_size[0], "mean": MEAN, "std": STD}}
    return vitkit.save(model, tmp_path / "native", class_names=CLASSES, metadata=metadata), model


def batch(model: VisionTransformer) -> torch.Tensor:
    height, width = model.config.img_size
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(3))


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def convert(capsys, *argv: str) -> str:
    assert main(["convert", *argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.parametrize("variant", VARIANTS)
def test_hf_directory_loads_in_transformers_with_vitkit_logits(tmp_path, capsys, variant):
    transformers = pytest.importorskip("transformers")
    source, model = saved_vit(tmp_path, **VARIANTS[variant])
    out = convert(capsys, str(source), str(tmp_path / "hf"), "--to", "hf")
    assert "load it: transformers.AutoModelForImageClassification" in out
    loaded = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "hf")
    expected = "DeiTForImageClassificationWithTeacher" if variant == "deit" else "ViTForImageClassification"
    assert type(loaded).__name__ == expected
    x = batch(model)
    got = loaded.eval()(pixel_values=x).logits.detach()
    torch.testing.assert_close(got, logits(model, x), atol=1e-4, rtol=0)
    assert [loaded.config.id2label[i] for i in range(3)] == CLASSES and loaded.config.label2id["dog"] == 1
    processor = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    height, width = model.config.img_size
    assert processor["size"] == {"height": height, "width": width} and processor["resample"] == 3  # bicubic
    assert processor["image_mean"] == MEAN and processor["image_std"] == STD

    convert(capsys, str(tmp_path / "hf"), str(tmp_path / "back"))
    back = vitkit.load(tmp_path / "back")
    torch.testing.assert_close(logits(back, x), logits(model, x), atol=1e-5, rtol=0)
    assert back.class_names == CLASSES


@pytest.mark.parametrize("variant", {**VARIANTS, **TIMM_ONLY})
def test_timm_directory_round_trips(tmp_path, capsys, variant):
    fields = {**VARIANTS, **TIMM_ONLY}[variant]
    source, model = saved_vit(tmp_path, **fields)
    out = convert(capsys, str(source), str(tmp_path / "timm"), "--to", "timm")
    assert f"load it: timm.create_model('local-dir:{tmp_path / 'timm'}', pretrained=True)" in out
    document = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert document["architecture"] == (
        "deit_base_distilled_patch16_224" if fields.get("distilled") else "vit_base_patch16_224"
    )
    args, cfg = document["model_args"], document["pretrained_cfg"]
    assert (args["embed_dim"], args["depth"], args["num_heads"], args["mlp_ratio"]) == (32, 2, 4, 2.0)
    if fields.get("pool") == "gap":
        assert (args["class_token"], args["global_pool"], args["fc_norm"]) == (False, "avg", False)
    height, width = model.config.img_size
    assert cfg["input_size"] == [3, height, width] and (cfg["mean"], cfg["std"]) == (MEAN, STD)
    assert (cfg["num_classes"], cfg["crop_pct"], cfg["interpolation"]) == (3, 0.875, "bicubic")
    assert document["label_names"] == CLASSES

    convert(capsys, str(tmp_path / "timm"), str(tmp_path / "back"))
    back = vitkit.load(tmp_path / "back")
    x = batch(model)
    torch.testing.assert_close(logits(back, x), logits(model, x), atol=1e-5, rtol=0)
    assert back.class_names == CLASSES


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed (benchmark tooling)")
@pytest.mark.parametrize("variant", {**VARIANTS, **TIMM_ONLY})
def test_timm_loads_the_directory_with_vitkit_logits(tmp_path, capsys, variant):
    import timm

    fields = {**VARIANTS, **TIMM_ONLY}[variant]
    source, model = saved_vit(tmp_path, **fields)
    convert(capsys, str(source), str(tmp_path / "timm"), "--to", "timm")
    loaded = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True)
    x = batch(model)
    torch.testing.assert_close(logits(loaded, x), logits(model, x), atol=1e-4, rtol=0)
    assert loaded.pretrained_cfg["mean"] == MEAN and loaded.pretrained_cfg["label_names"] == CLASSES


def refused(capsys, tmp_path: Path, source: Path, target: str) -> str:
    assert main(["convert", str(source), str(tmp_path / f"out-{target}"), "--to", target]) == 2
    assert not (tmp_path / f"out-{target}").exists()
    return capsys.readouterr().err


def test_gap_is_refused_for_hf(tmp_path, capsys):
    source, _ = saved_vit(tmp_path, pool="gap")
    assert "transformers' ViTForImageClassification classifies from the class token" in refused(
        capsys, tmp_path, source, "hf"
    )


@pytest.mark.parametrize("target", ["hf", "timm"])
def test_a_hybrid_stem_is_refused(tmp_path, capsys, target):
    model = vitkit.create_model("C20+mu/4", img_size=32, depth=1, num_classes=3)
    source = vitkit.save(model, tmp_path / "hybrid")
    assert "the model has a C20 stem (a hybrid or convolutional tokenizer)" in refused(capsys, tmp_path, source, target)


def test_a_convnet_is_refused(tmp_path, capsys):
    source = vitkit.save(vitkit.create_model("resnet20", num_classes=3), tmp_path / "resnet")
    assert "timm ViT checkpoints hold Vision Transformers; resnet20 is a ConvNet" in refused(
        capsys, tmp_path, source, "timm"
    )


def test_a_pre_logits_layer_is_refused(tmp_path, capsys):
    source, _ = saved_vit(tmp_path, representation_size=16)
    assert "the model has a pre-logits layer (representation_size=16)" in refused(capsys, tmp_path, source, "hf")


def test_a_headless_model_is_refused(tmp_path, capsys):
    source = vitkit.save(vitkit.create_model("mu/8", img_size=32, depth=1, num_classes=0), tmp_path / "headless")
    assert "the model has no head (num_classes 0)" in refused(capsys, tmp_path, source, "timm")


def test_a_layer_norm_eps_timm_cannot_set_is_refused(tmp_path, capsys):
    source, _ = saved_vit(tmp_path, layer_norm_eps=1e-12)
    assert "the model's LayerNorm epsilon is 1e-12; timm's ViT uses 1e-06" in refused(capsys, tmp_path, source, "timm")


def test_an_mlp_width_no_ratio_gives_is_refused(tmp_path, capsys):
    source, _ = saved_vit(tmp_path, hidden_dim=28, mlp_dim=61)
    assert "which no ratio makes 61 at width 28" in refused(capsys, tmp_path, source, "timm")


def test_an_existing_destination_is_not_replaced(tmp_path, capsys):
    source, _ = saved_vit(tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main(["convert", str(source), str(tmp_path / "taken"), "--to", "hf"]) == 2
    assert "taken exists and is not empty; choose a new DST or remove it first" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_a_run_directory_converts_its_best_checkpoint(tmp_path, capsys):
    source, model = saved_vit(tmp_path)
    run = tmp_path / "runs" / "r"
    (run / "checkpoints").mkdir(parents=True)
    source.rename(run / "checkpoints" / "best")
    out = convert(capsys, str(run), str(tmp_path / "timm"), "--to", "timm")
    assert f"mean {MEAN} std {STD} (checkpoint metadata)" in out
    x = batch(model)
    torch.testing.assert_close(logits(vitkit.load(tmp_path / "timm"), x), logits(model, x), atol=1e-5, rtol=0)
