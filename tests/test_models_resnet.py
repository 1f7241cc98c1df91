"""ConvNets: He et al.'s CIFAR ResNets and BiT's ResNetV2 against their papers, formulas and vitkit's interfaces."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import vitkit
from vitkit import configs
from vitkit.cli.main import main as cli_main
from vitkit.models import (
    CifarResNet,
    CifarResNetConfig,
    ResNetV2,
    ResNetV2Config,
    StdConv2d,
    VisionTransformer,
    build_model,
    config_from_dict,
    model_config,
)
from vitkit.models.resnet import Bottleneck, group_norm, pad_same
from vitkit.models.summary import summarize


def count(model: torch.nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters())


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """O(1) random parameters and BatchNorm statistics, so a dropped or misplaced weight shows in the output."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(
                    torch.rand_like(tensor) + 0.5 if "var" in name or "norm" in name else torch.randn_like(tensor)
                )
    return model.eval()


# --- formulas ---------------------------------------------------------------------------------------------


def test_stdconv_standardises_each_filter():
    conv = StdConv2d(5, 7, 3)
    x = torch.randn(2, 5, 9, 9)
    w = conv.weight
    centred = w - w.mean(dim=(1, 2, 3), keepdim=True)
    standardised = centred / (centred.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
    torch.testing.assert_close(conv(x), F.conv2d(x, standardised, padding=1))
    # Scaling or shifting a filter changes nothing: that is the point of standardisation.
    with torch.no_grad():
        conv.weight.mul_(3.0).add_(0.5)
    torch.testing.assert_close(conv(x), F.conv2d(x, standardised, padding=1), rtol=1e-4, atol=1e-5)


def test_same_padding_puts_the_odd_pixel_after():
    x = torch.randn(1, 2, 8, 8)
    assert pad_same(x, 3, 2).shape[-2:] == (9, 9)  # 3x3/2 on 8: 0 before, 1 after (TensorFlow 'SAME')
    torch.testing.assert_close(pad_same(x, 3, 2)[..., :8, :8], x)
    assert pad_same(torch.randn(1, 1, 32, 32), 7, 2)[0, 0, 2:-3, 2:-3].shape == (32, 32)
    conv = StdConv2d(2, 4, 3, stride=2, same=True)
    assert conv(x).shape[-2:] == (4, 4) and conv(torch.randn(1, 2, 9, 9)).shape[-2:] == (5, 5)


def test_group_norm_matches_its_definition():
    norm = randomize(group_norm(64))
    x = torch.randn(2, 64, 5, 5)
    g = x.reshape(2, 32, -1)
    want = ((g - g.mean(-1, keepdim=True)) / (g.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()).reshape_as(x)
    torch.testing.assert_close(norm(x), want * norm.weight[:, None, None] + norm.bias[:, None, None])


@pytest.mark.parametrize("project", [True, False])
def test_bit_preactivation_unit_matches_the_formula(project):
    """BiT unit: a = relu(GN(x)); out = conv3(relu(GN(conv2(relu(GN(conv1(a))))))) + (proj(a) or x itself)."""
    chans, stride = (64, 2) if project else (128, 1)
    unit = randomize(Bottleneck(chans, 128, stride=stride, preact=True, project=project))
    x = torch.randn(2, chans, 8, 8)

    def conv(module, h, stride=1, padding=0):
        w = module.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (
            w.var(dim=(1, 2, 3), unbiased=False, keepdim=True) + 1e-8
        ).sqrt()
        return F.conv2d(h, w, stride=stride, padding=padding)

    def gn_relu(module, h):
        return F.relu(F.group_norm(h, 32, module.weight, module.bias, 1e-5))

    a = gn_relu(unit.norm1, x)
    h = gn_relu(unit.norm3, conv(unit.conv2, gn_relu(unit.norm2, conv(unit.conv1, a)), stride=stride, padding=1))
    shortcut = conv(unit.downsample.conv, a, stride=2) if project else x
    torch.testing.assert_close(unit(x), conv(unit.conv3, h) + shortcut)


def test_cifar_block_option_a_pads_channels_with_zeros():
    model = randomize(CifarResNet(CifarResNetConfig(layers=(1, 1), num_classes=0)))
    block = model.stages[1].blocks[0]
    x = torch.randn(2, 16, 8, 8)
    h = F.relu(
        F.batch_norm(
            F.conv2d(x, block.conv1.weight, stride=2, padding=1),
            block.norm1.running_mean,
            block.norm1.running_var,
            block.norm1.weight,
            block.norm1.bias,
            eps=1e-5,
        )
    )
    h = F.batch_norm(
        F.conv2d(h, block.conv2.weight, padding=1),
        block.norm2.running_mean,
        block.norm2.running_var,
        block.norm2.weight,
        block.norm2.bias,
        eps=1e-5,
    )
    shortcut = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4)], dim=1)
    torch.testing.assert_close(block(x), F.relu(h + shortcut))
    assert block.downsample is None


# --- sizes against the papers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "paper"),
    [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet44", 0.66e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6)],
)
def test_cifar_parameter_counts_match_he_et_al_table_6(name, paper):
    model = vitkit.create_model(name, num_classes=10, img_size=32)
    assert isinstance(model, CifarResNet) and model.config.depth == int(name.removeprefix("resnet"))
    assert abs(count(model) - paper) / paper < 0.02


def test_option_b_adds_only_the_two_projections():
    a, b = (count(build_model(model_config("resnet20", shortcut=s))) for s in "AB")
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_resnetv2_parameter_counts():
    """Post-activation R50 without head = torchvision's ResNet-50 (25,557,032) minus its fc (2,049,000): GN has
    BN's affine parameters. BiT-R50x1 and R101x1 with 1000 classes: 25.55M and 44.54M (timm's BiT ports)."""
    with torch.device("meta"):
        headless = ResNetV2(ResNetV2Config(preact=False, num_classes=0))
        bit50, bit101 = (build_model(model_config(name)) for name in ("resnetv2_50x1", "resnetv2_101x1"))
    assert count(headless) == 25_557_032 - 2_049_000
    assert abs(count(bit50) - 25.55e6) < 0.01e6 and abs(count(bit101) - 44.54e6) < 0.01e6
    with torch.device("meta"):
        assert abs(count(build_model(model_config("resnetv2_50x3"))) - 217.32e6) < 0.01e6


@pytest.mark.parametrize(
    ("name", "size", "grid", "small"),
    [
        ("resnet20", 32, 8, {"layers": (1, 1, 1)}),
        ("resnetv2_50x1", 64, 2, {"layers": (1, 1, 1, 1), "width_factor": 0.5}),
    ],
)
def test_shapes_at_any_resolution(name, size, grid, small):
    config = model_config(name, num_classes=7, img_size=size, **small)
    model = build_model(config).eval()
    for scale in (1, 2):
        x = torch.randn(2, 3, size * scale, size * scale)
        assert model.forward_features(x).shape[-2:] == (grid * scale, grid * scale)
        assert model(x).shape == (2, 7)


def test_flops_and_params_in_the_model_table():
    row = summarize(model_config("resnet56", img_size=32))
    assert row.params == count(build_model(model_config("resnet56"))) and 0.24 < row.gflops < 0.26  # 125M MACs


def test_models_cli_lists_convnets(capsys):
    assert cli_main(["models", "resnet20", "resnet56", "--img-size", "32", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "| resnet20 | 20 |" in out and "| resnet56 | 56 |" in out and "0.27M" in out


# --- the interface the trainer uses -------------------------------------------------------------------------


def test_trainer_interface():
    model = vitkit.create_model("resnet20", num_classes=10, img_size=32)
    assert model.class_names is None and model.config.name == "resnet20"
    assert json.loads(json.dumps(model.config.to_dict()))["layers"] == [3, 3, 3]
    skip = model.no_weight_decay()
    assert {"stem.norm.weight", "stem.norm.bias", "head.bias", "stages.0.blocks.0.norm1.weight"} <= skip
    assert not {"stem.conv.weight", "head.weight", "stages.0.blocks.0.conv1.weight"} & skip
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_reset_head_follows_the_config():
    bit = build_model(model_config("resnetv2_50x1", layers=(1, 1), num_classes=3))
    assert torch.count_nonzero(bit.head.weight) == 0  # BiT's zero head
    cifar = build_model(model_config("resnet20", num_classes=3))
    assert torch.count_nonzero(cifar.head.weight) > 0
    cifar.config = cifar.config.replace(zero_init_head=True)
    cifar.reset_head()
    assert torch.count_nonzero(cifar.head.weight) == 0


@pytest.mark.parametrize(
    "config",
    [
        CifarResNetConfig(layers=(2, 1), shortcut="B", img_size=(24, 40)),
        ResNetV2Config(layers=(1, 2), width_factor=0.5, preact=False),
    ],
)
def test_config_dict_round_trip(config):
    assert configs.make(type(config), json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("name", "small"), [("resnet20", {"layers": (1, 1, 1)}), ("resnetv2_50x1", {"layers": (1, 1), "width_factor": 0.5})]
)
def test_native_save_load_round_trip(tmp_path, name, small):
    model = randomize(build_model(model_config(name, num_classes=3, img_size=32, **small)))
    vitkit.save(model, tmp_path / name, class_names=["cat", "dog", "eel"])
    document = json.loads((tmp_path / name / "config.json").read_text())
    assert document["architecture"] == {"resnet20": "resnet_cifar", "resnetv2_50x1": "resnetv2"}[name]
    loaded = vitkit.load(tmp_path / name).eval()
    assert type(loaded) is type(model) and loaded.config == model.config and loaded.class_names == ["cat", "dog", "eel"]
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)  # BatchNorm statistics travel too
    new_task = vitkit.create_model(pretrained=tmp_path / name, num_classes=5)
    assert new_task.config.num_classes == 5 and torch.count_nonzero(new_task.head.weight) == 0
    torch.testing.assert_close(new_task.stem.conv.weight, model.stem.conv.weight)


def test_files_without_architecture_hold_vits(tmp_path):
    vit = vitkit.create_model("Mini/4", img_size=16, depth=1, num_classes=2)
    vitkit.save(vit, tmp_path / "old")
    document = json.loads((tmp_path / "old" / "config.json").read_text())
    assert document.pop("architecture") == "vit"
    (tmp_path / "old" / "config.json").write_text(json.dumps(document))
    assert isinstance(vitkit.load(tmp_path / "old"), VisionTransformer)


# --- errors -------------------------------------------------------------------------------------------------


def test_unknown_convnet_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet50'.*resnet20, resnet32, resnet44, resnet56"):
        model_config("resnet50")
    with pytest.raises(ValueError, match=r"unknown model 'resnetv2_34x1'.*depth 26, 50, 101, 152"):
        model_config("resnetv2_34x1")
    with pytest.raises(ValueError, match=r"unknown model 'X/16'.*resnet20"):
        model_config("X/16")


def test_config_errors():
    with pytest.raises(ValueError, match=r"unknown CIFAR ResNet config field\(s\) \['drop_path'\]; valid fields"):
        vitkit.create_model("resnet20", drop_path=0.1)
    with pytest.raises(ValueError, match="shortcut must be one of"):
        model_config("resnet20", shortcut="C")
    with pytest.raises(ValueError, match=r"width_factor 0.3 gives 19.2 stem channels, but GroupNorm\(32\)"):
        model_config("resnetv2_50x1", width_factor=0.3)
    with pytest.raises(ValueError, match="layers must list at least one stage"):
        CifarResNetConfig(layers=())
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        config_from_dict({}, "vgg")
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 3, height, width\)"):
        vitkit.create_model("resnet20")(torch.zeros(1, 1, 32, 32))


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    vitkit.save(vitkit.create_model("resnet20"), tmp_path / "r20")
    with pytest.raises(ValueError, match="holds a resnet_cifar model but 'B/16' is a vit"):
        vitkit.create_model("B/16", pretrained=tmp_path / "r20")
    with pytest.raises(ValueError, match=r"has layers=\(3, 3, 3\) but model 'resnet56' has \(9, 9, 9\)"):
        vitkit.create_model("resnet56", pretrained=tmp_path / "r20")


def test_feature_map_of_the_stem_is_exactly_divided():
    """Both families shrink H by exactly their total stride when it divides H (what the hybrid relies on)."""
    for config in (CifarResNetConfig(layers=(1, 1, 1), num_classes=0), ResNetV2Config((1, 1), preact=False)):
        features = build_model(config).forward_features(torch.randn(1, 3, 48, 80))
        assert features.shape[-2:] == (48 // config.total_stride, 80 // config.total_stride)
        assert features.shape[1] == config.num_features and math.log2(config.total_stride) % 1 == 0


# --- the fast CIFAR VGG ("vgg8", airbench line) ---------------------------------------------------------------


def test_vgg8_forward_is_its_formula():
    model = randomize(vitkit.create_model("vgg8", num_classes=10)).eval()
    images = torch.randn(2, 3, 32, 32)
    x = F.gelu(model.stem(images))
    assert x.shape[-2:] == (31, 31)  # a 2x2 stem without padding
    for group in model.groups:
        x = F.gelu(group.norm1(F.max_pool2d(group.conv1(x), 2)))
        x = F.gelu(group.norm2(group.conv2(x)))
    assert x.shape == (2, 128, 3, 3)
    expected = model.head(x.amax(dim=(2, 3))) / 9
    # The model convolves channels-last activations: another summation order, equal to float rounding.
    torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_vgg8_wide_is_airbenchs_94_percent_widths():
    model = vitkit.create_model("vgg8_wide", num_classes=10)
    assert model.config.widths == (64, 256, 256) and model.config.name == "vgg8_wide"
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert vitkit.create_model("vgg8_wide", widths=(32, 64)).config.widths == (32, 64)  # fields still override


def test_vgg8_size_and_dirac_init():
    model = vitkit.create_model("vgg8", num_classes=10)
    config = model.config
    assert config.depth == 8 and config.num_features == 128 and config.total_stride == 8
    convs = 3 * 24 * 4 + 24 + 9 * (24 * 64 + 64 * 64 + 64 * 128 + 3 * 128 * 128)
    assert count(model) == convs + 2 * 2 * (64 + 128 + 128) + 128 * 10 + 10
    conv = model.groups[1].conv1  # 64 -> 128: its first 64 filters copy their input channel
    identity = torch.zeros(64, 64, 3, 3)
    identity[torch.arange(64), torch.arange(64), 1, 1] = 1
    torch.testing.assert_close(conv.weight[:64], identity)
    assert conv.weight[64:].abs().sum() > 0


def test_vgg8_round_trip_and_errors(tmp_path):
    model = randomize(vitkit.create_model("vgg8", num_classes=3, widths=(8, 16), stem_width=12)).eval()
    vitkit.save(model, tmp_path / "ckpt")
    loaded = vitkit.load(tmp_path / "ckpt").eval()
    assert (
        loaded.config == model.config
        and json.loads((tmp_path / "ckpt" / "config.json").read_text())["architecture"] == "vgg_cifar"
    )
    images = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded(images), model(images))
    with pytest.raises(ValueError, match=r"too small for 3 max-pooling groups .* use at least 9 px"):
        vitkit.create_model("vgg8", img_size=8)
