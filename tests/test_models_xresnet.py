"""xresnet (Bag-of-Tricks ResNet-D): names, the three tweaks, interface, checkpoints, ONNX export, training."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import vitkit
from vitkit.errors import UsageError
from vitkit.models import XResNet, XResNetConfig, build_model, config_from_dict, model_config
from vitkit.models.xresnet import XBlock, XStem

SMALL = {"num_classes": 3, "width_factor": 0.25}


def test_names_decode_into_configs():
    assert model_config("xresnet18").layers == (2, 2, 2, 2) and not model_config("xresnet18").bottleneck
    assert model_config("xresnet50").layers == (3, 4, 6, 3) and model_config("xresnet50").bottleneck
    assert model_config("xresnet26").bottleneck and model_config("xresnet10").layers == (1, 1, 1, 1)
    narrow = model_config("xresnet18x0.5_mish")
    assert narrow.width_factor == 0.5 and narrow.act == "mish" and narrow.widths == [32, 64, 128, 256]
    assert model_config("xresnet50").num_features == 2048


@pytest.mark.parametrize(("name", "millions"), [("xresnet18", 11.2), ("xresnet50", 23.5)])
def test_parameter_counts(name, millions):
    # torchvision's resnet18/50 have 11.69M / 25.56M with a 1000-class head; with 10 classes 11.18M / 23.53M,
    # and the three-convolution stem adds 0.02M over the 7x7 one.
    model = vitkit.create_model(name, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.05)


def test_stem_is_three_convolutions_and_a_max_pool():
    stem = XStem(3)
    convs = [m for m in stem.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3 and [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1)]
    assert [c.out_channels for c in convs] == [32, 32, 64] and isinstance(stem[-1], nn.MaxPool2d)
    assert stem(torch.randn(1, 3, 128, 128)).shape == (1, 64, 32, 32)


def test_downsampling_shortcut_average_pools_before_its_projection():
    block = XBlock(16, 32, stride=2, bottleneck=False, act="relu").eval()
    pool, project = block.shortcut
    assert isinstance(pool, nn.AvgPool2d) and project[0].kernel_size == (1, 1) and project[0].stride == (1, 1)
    x = torch.randn(2, 16, 8, 8)
    expected = project(nn.functional.avg_pool2d(x, 2))
    torch.testing.assert_close(block.shortcut(x), expected)
    assert len(XBlock(16, 16, stride=1, bottleneck=False, act="relu").shortcut) == 0  # identity


@pytest.mark.parametrize("bottleneck", [False, True])
def test_blocks_start_as_the_identity(bottleneck):
    # Zero-init of each block's last BN gamma: an xresnet starts as its stem, pooled, and the head.
    model = build_model(XResNetConfig(layers=(1, 2), bottleneck=bottleneck, num_classes=3, width_factor=0.5)).eval()
    for stage in model.stages:
        for block in stage:
            assert torch.count_nonzero(block.last_norm().weight) == 0
    block = model.stages[1][1]
    x = torch.rand(2, block.convs[0][0].in_channels, 8, 8)  # non-negative, as after a ReLU
    torch.testing.assert_close(block(x), x)


def test_mish_replaces_every_relu():
    model = vitkit.create_model("xresnet10_mish", **SMALL)
    assert any(isinstance(m, nn.Mish) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


@pytest.mark.parametrize(("size", "grid"), [(128, 4), (160, 5), (224, 7), (64, 2)])
def test_any_resolution(size, grid):
    model = vitkit.create_model("xresnet18", **SMALL).eval()
    x = torch.randn(2, 3, size, size)
    assert model.forward_features(x).shape == (2, 128, grid, grid) and model(x).shape == (2, 3)


def test_trainer_interface():
    model = vitkit.create_model("xresnet18", num_classes=10)
    assert isinstance(model, XResNet) and model.patch_size is None and model.attention_shape() is None
    skip = model.no_weight_decay()
    assert "head.bias" in skip and "stem.0.1.weight" in skip and "head.weight" not in skip
    assert torch.count_nonzero(model.head.weight) > 0  # from scratch: not a zero head


def test_native_round_trip(tmp_path):
    model = vitkit.create_model("xresnet26_mish", img_size=64, **SMALL)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64))  # move the BN statistics off their initial values
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    model.eval()
    vitkit.save(model, tmp_path / "x", class_names=["a", "b", "c"])
    assert json.loads((tmp_path / "x" / "config.json").read_text())["architecture"] == "xresnet"
    loaded = vitkit.load(tmp_path / "x").eval()
    assert loaded.config == model.config and loaded.class_names == ["a", "b", "c"]
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert config_from_dict(json.loads(json.dumps(model.config.to_dict())), "xresnet") == model.config


def test_errors_name_the_valid_choices():
    with pytest.raises(UsageError, match="xresnet<depth>"):
        model_config("xresnet19")
    with pytest.raises(UsageError, match="act must be one of"):
        XResNetConfig(act="gelu")
    with pytest.raises(UsageError, match="width_factor"):
        XResNetConfig(width_factor=0.3)
    with pytest.raises(UsageError, match="xresnet"):
        vitkit.create_model("xresnet18", num_classes=3, pool="gap")  # a ViT field


def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vitkit.export import OnnxModel, export_onnx

    model = vitkit.create_model("xresnet10_mish", img_size=64, **SMALL)
    with torch.no_grad():
        for stage in model.stages:
            for block in stage:
                block.last_norm().weight.fill_(0.5)  # exercise the residual branches, not only the shortcuts
    model.eval()
    path = vitkit.save(model, tmp_path / "x", metadata={"data": {"img_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3}})
    out, _ = export_onnx(path, tmp_path / "x.onnx")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images).numpy()
    torch.testing.assert_close(
        torch.from_numpy(OnnxModel(out).run(images)[0]), torch.from_numpy(expected), atol=1e-4, rtol=0
    )


def test_vitkit_train_builds_and_saves_an_xresnet(tmp_path):
    from vitkit.cli.main import main

    out = tmp_path / "run"
    argv = [
        "train", "--data", "digits", "--limit-per-class", "6", "--img-size", "32", "--model", "xresnet10x0.25",
        "--batch-size", "20", "--epochs", "1", "--threads", "1", "--no-progress", "--precision", "fp32",
        "--warmup-steps", "1", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and 0 <= summary["val_top1"] <= 100  # percent
    assert json.loads((out / "checkpoints" / "last" / "config.json").read_text())["architecture"] == "xresnet"
    assert isinstance(vitkit.load(out / "checkpoints" / "last"), XResNet)
