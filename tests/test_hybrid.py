"""The hybrid ViT (paper Sec. 3.1, App. B): variant strings, any resolution, vitkit, timm and JAX checkpoints.

The timm and JAX checkpoints are generated here from a random tiny hybrid (timm is not installed); their logits
are checked against a reference written from the formulas (weight standardisation, GroupNorm, TensorFlow 'SAME'
padding, the ViT equations), computed in float64 from the foreign weights themselves.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitkit
from test_interop_formats import to_jax
from vitkit.checkpoints import read_checkpoint
from vitkit.models import CifarResNet, ResNetV2, VisionTransformer, XResNet, model_config

# A hybrid small enough for CPU tests: ResNet-26 at half width, /16 (stages 2, 2, 4), a 2-layer 64-wide ViT.
TINY_R = {"hidden_dim": 64, "depth": 2, "num_heads": 4, "mlp_dim": 128, "num_classes": 5}


def random_hybrid(name: str = "R26x0.5+Ti/16", img_size: int = 32, seed: int = 0, **fields) -> VisionTransformer:
    """A hybrid whose every parameter is random and O(1), so any wrong mapping changes the logits."""
    torch.manual_seed(seed)
    model = vitkit.create_model(name, img_size=img_size, **{**TINY_R, **fields})
    with torch.no_grad():
        for key, param in model.named_parameters():
            if key.endswith(".weight") and "norm" in key.split(".")[-2]:
                param.normal_(1.0, 0.2)
            elif param.ndim >= 2 and not key.startswith(("pos_embed", "cls_token")):
                param.normal_(0, param[0].numel() ** -0.5)
            else:
                param.normal_(0, 0.2)
    return model.eval()


def images(size: int = 32, seed: int = 1) -> torch.Tensor:
    """A fixed batch of two images."""
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- reference computation from the formulas ----------------------------------------------------------------


def standardize(w: torch.Tensor, jax: bool) -> torch.Tensor:
    """timm: (w - mean) / sqrt(var + 1e-8); vit_jax models_resnet.py: (w - mean) / (std + 1e-5), per filter."""
    centred = w - w.mean(dim=(1, 2, 3), keepdim=True)
    var = (centred**2).mean(dim=(1, 2, 3), keepdim=True)
    return centred / (var.sqrt() + 1e-5) if jax else centred / (var + 1e-8).sqrt()


def same_conv(x: torch.Tensor, w: torch.Tensor, stride: int, jax: bool) -> torch.Tensor:
    """TensorFlow 'SAME': ceil(n / stride) outputs, the odd padding pixel after."""
    pads = []
    for n in (x.shape[3], x.shape[2]):
        total = max((math.ceil(n / stride) - 1) * stride + w.shape[-1] - n, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), standardize(w, jax), stride=stride)


def group_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """GroupNorm(32) from its definition: normalise each group of channels over (channels, H, W)."""
    b, c, h, w = x.shape
    g = x.reshape(b, 32, -1)
    g = (g - g.mean(-1, keepdim=True)) / (g.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
    return g.reshape(b, c, h, w) * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


def reference_stem(x: torch.Tensor, p: dict[str, torch.Tensor], layers: tuple[int, ...], jax: bool) -> torch.Tensor:
    """vit_jax's hybrid root + ResidualUnits from vitkit/timm-named float64 weights (OIHW)."""
    eps = 1e-6 if jax else 1e-5  # Flax GroupNorm vs timm's GroupNormAct
    x = F.relu(group_norm(same_conv(x, p["stem.conv.weight"], 2, jax), p["stem.norm.weight"], p["stem.norm.bias"], eps))
    x = F.max_pool2d(F.pad(x, [0, 1, 0, 1], value=-math.inf), 3, 2)  # 'SAME' max pool on even sizes
    for i, depth in enumerate(layers):
        for j in range(depth):
            u, stride = f"stages.{i}.blocks.{j}.", 2 if i > 0 and j == 0 else 1
            residual = x
            if j == 0:
                residual = same_conv(x, p[u + "downsample.conv.weight"], stride, jax)
                residual = group_norm(residual, p[u + "downsample.norm.weight"], p[u + "downsample.norm.bias"], eps)
            for k, s in ((1, 1), (2, stride), (3, 1)):
                x = same_conv(x, p[f"{u}conv{k}.weight"], s, jax)
                x = group_norm(x, p[f"{u}norm{k}.weight"], p[f"{u}norm{k}.bias"], eps)
                x = F.relu(x) if k < 3 else x
            x = F.relu(x + residual)
    return x


def reference_vit(
    tokens: torch.Tensor, p: dict[str, torch.Tensor], heads: int, approximate: str = "none"
) -> torch.Tensor:
    """Eqs. (1)-(4) with a class token, learned E_pos, pre-norm MSA/MLP blocks and a linear head."""
    dim = tokens.shape[-1]
    x = torch.cat([p["cls_token"].expand(tokens.shape[0], -1, -1), tokens], dim=1) + p["pos_embed.weight"]
    depth = len({key.split(".")[1] for key in p if key.startswith("blocks.")})
    for i in range(depth):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), p[b + "norm1.weight"], p[b + "norm1.bias"], 1e-6)
        q, k, v = (h @ p[b + "attn.qkv.weight"].T + p[b + "attn.qkv.bias"]).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
        attn = ((q @ k.transpose(-2, -1)) / math.sqrt(dim // heads)).softmax(-1) @ v
        x = x + attn.transpose(1, 2).flatten(2) @ p[b + "attn.proj.weight"].T + p[b + "attn.proj.bias"]
        h = F.layer_norm(x, (dim,), p[b + "norm2.weight"], p[b + "norm2.bias"], 1e-6)
        h = F.gelu(h @ p[b + "mlp.fc1.weight"].T + p[b + "mlp.fc1.bias"], approximate=approximate)
        x = x + h @ p[b + "mlp.fc2.weight"].T + p[b + "mlp.fc2.bias"]
    x = F.layer_norm(x, (dim,), p["norm.weight"], p["norm.bias"], 1e-6)
    return x[:, 0] @ p["head.weight"].T + p["head.bias"]


def reference_logits(x: torch.Tensor, vitkit_named: dict[str, torch.Tensor], layers, heads: int, jax: bool):
    """The whole hybrid from the formulas, in float64."""
    p = {key.removeprefix("patch_embed.backbone."): value.double() for key, value in vitkit_named.items()}
    features = reference_stem(x.double(), p, layers, jax)
    tokens = F.conv2d(features, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"]).flatten(2).transpose(1, 2)
    return reference_vit(tokens, p, heads, approximate="tanh" if jax else "none")  # Flax's GELU is tanh-approximate


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|."""
    return float((got.detach().double() - want).abs().max() / want.abs().max())


# --- variant strings and the stem -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "layers", "grid", "width"),
    [
        ("R50+B/16", (3, 4, 9), (14, 14), 1024),  # stage 4 removed, its units moved into stage 3 (App. B)
        ("R50+L/32", (3, 4, 6, 3), (7, 7), 2048),
        ("R26x0.5+Ti/16", (2, 2, 4), (14, 14), 512),
    ],
)
def test_resnet_stems_follow_the_paper(name, layers, grid, width):
    config = model_config(name)
    assert config.stem == name.split("+")[0] and config.name == name and config.grid_size == grid
    with torch.device("meta"):
        backbone = VisionTransformer(config).patch_embed.backbone
    assert isinstance(backbone, ResNetV2) and not backbone.config.preact
    assert backbone.config.layers == layers and backbone.config.num_features == width


@pytest.mark.parametrize(
    ("name", "layers", "grid"), [("C20+Mini/4", (3, 3, 3), (8, 8)), ("C56+Mini/2", (9, 18), (16, 16))]
)
def test_cifar_stems_for_32px_images(name, layers, grid):
    model = vitkit.create_model(name, img_size=32, num_classes=10, depth=1)
    assert isinstance(model.patch_embed.backbone, CifarResNet)
    assert model.patch_embed.backbone.config.layers == layers and model.config.grid_size == grid
    tokens, got_grid = model.patch_embed(images())
    assert got_grid == grid and tokens.shape == (2, grid[0] * grid[1], model.config.hidden_dim)
    assert model(images()).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "layers", "width", "act"),
    [
        ("X50+Ti/16", (3, 4, 9), 1024, nn.ReLU),  # folded as R50 (App. B): stage 4's units moved into stage 3
        ("X18x0.5_mish+Ti/16", (2, 2, 4), 128, nn.Mish),
        ("X26+Ti/32", (2, 2, 2, 2), 2048, nn.ReLU),
    ],
)
def test_xresnet_stems_for_photos(name, layers, width, act):
    model = vitkit.create_model(name, img_size=128, num_classes=10, depth=1).eval()
    backbone = model.patch_embed.backbone
    assert isinstance(backbone, XResNet) and backbone.config.num_classes == 0
    assert backbone.config.layers == layers and backbone.config.num_features == width
    assert isinstance(backbone.stem[0][2], act) and model.patch_embed.proj.in_channels == width
    grid = 128 // model.config.patch_size[0]
    tokens, got = model.patch_embed(images(128))
    assert got == (grid, grid) and tokens.shape == (2, grid * grid, 192)
    assert model(images(128)).shape == (2, 10)


def test_xresnet_hybrid_round_trip(tmp_path):
    model = vitkit.create_model("X10x0.25_mish+Mini/16", img_size=64, num_classes=3, depth=1).eval()
    vitkit.save(model, tmp_path / "x10")
    loaded = vitkit.load(tmp_path / "x10").eval()
    assert loaded.config.stem == "X10x0.25_mish"
    torch.testing.assert_close(loaded(images(64)), model(images(64)), rtol=0, atol=0)


def test_hybrid_presets_match_timm_names():
    config = model_config("vit_base_r50_s16_384")
    assert (config.stem, config.patch_size, config.img_size, config.hidden_dim) == ("R50", (16, 16), (384, 384), 768)
    assert model_config("vit_base_r50_s16_224_in21k").representation_size == 768


def test_paper_hybrid_parameter_count():
    """R50+ViT-B/16 = ViT-B/16 (86.6M) - its 16x16x3 patch projection + the R50 stages 1-3 + a 1x1 projection."""
    with torch.device("meta"):
        hybrid, plain = (VisionTransformer(model_config(name)) for name in ("R50+B/16", "B/16"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    backbone = count(hybrid.patch_embed.backbone)
    assert count(hybrid) == count(plain) - (768 * 3 * 16 * 16 + 768) + backbone + (1024 * 768 + 768)
    assert 11.8e6 < backbone < 12.0e6 and 98.5e6 < count(hybrid) < 98.8e6


def test_hybrid_runs_at_two_resolutions_with_resampled_position_embeddings(tmp_path):
    model = random_hybrid("C20+Mini/4", num_classes=3)
    assert model.config.grid_size == (8, 8)
    at_48 = model(images(48))  # 12x12 grid: E_pos resampled on the fly from the stem's grid
    _, grid = model.embed(images(48))
    assert grid == (12, 12) and at_48.shape == (2, 3)
    vitkit.save(model, tmp_path / "c20")
    fine_tuned = vitkit.create_model(pretrained=tmp_path / "c20", img_size=48)  # resampled once, at loading
    assert fine_tuned.pos_embed.weight.shape[1] == 1 + 144
    torch.testing.assert_close(fine_tuned.eval()(images(48)), at_48)


def test_native_round_trip_keeps_stem_and_logits(tmp_path):
    model = random_hybrid()
    vitkit.save(model, tmp_path / "hybrid", class_names=list("abcde"))
    loaded = vitkit.load(tmp_path / "hybrid").eval()
    assert loaded.config == model.config and loaded.config.stem == "R26x0.5"
    assert loaded.class_names == list("abcde")
    torch.testing.assert_close(loaded(images()), model(images()), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("R50+B/12", "stem R50 cannot give patch size 12x12: its stages downsample by 4 or 8 or 16 or 32"),
        ("C20+Mini/8", "stem C20 cannot give patch size 8x8: its stages downsample by 1 or 2 or 4"),
        ("R34+B/16", "unknown hybrid stem 'R34'"),
        ("C21+Mini/4", "unknown hybrid stem 'C21'"),
        ("X50+B/12", "stem X50 cannot give patch size 12x12"),
        ("X20+B/16", "unknown hybrid stem 'X20'"),
        ("R50_mish+B/16", "only the xresnet stems"),
    ],
)
def test_stem_name_errors(name, message):
    with pytest.raises(ValueError, match=message):
        model_config(name)


def test_image_not_divisible_by_the_stem_stride():
    model = vitkit.create_model("C20+Mini/4", img_size=32, depth=1)
    with pytest.raises(
        ValueError,
        match="image size 30 is not divisible by the total stride 4 of the C20 stem; use an image size of 28 or 32",
    ):
        model(images(30))
    with pytest.raises(ValueError, match="expected 3 image channels, got 1"):
        model(torch.zeros(1, 1, 32, 32))


# --- foreign checkpoints ----------------------------------------------------------------------------------


def test_timm_hybrid_state_dict_matches_the_formulas(tmp_path):
    model = random_hybrid()
    state = {("pos_embed" if k == "pos_embed.weight" else k): v.clone() for k, v in model.state_dict().items()}
    assert "patch_embed.backbone.stages.2.blocks.3.norm3.bias" in state  # timm's names, unchanged
    torch.save(state, tmp_path / "vit_r26_s16.pth")
    checkpoint = read_checkpoint(tmp_path / "vit_r26_s16.pth", num_heads=4)
    config = checkpoint.config
    assert checkpoint.format == "timm" and config.stem == "R26x0.5"
    assert (config.patch_size, config.img_size, config.hidden_dim, config.depth) == ((16, 16), (32, 32), 64, 2)
    loaded = vitkit.create_model(pretrained=tmp_path / "vit_r26_s16.pth", num_heads=4).eval()
    want = reference_logits(images(), model.state_dict(), (2, 2, 4), heads=4, jax=False)
    assert relative_error(loaded(images()), want) < 1e-5  # float32 model vs float64 formulas


def to_jax_hybrid(model: VisionTransformer) -> dict[str, np.ndarray]:
    """vitkit -> the R50+ViT-B_16.npz names: conv_root, gn_root, blockI/unitJ/{convK,gnK,conv_proj,gn_proj}."""
    out = to_jax(model)
    sd = {k.removeprefix("patch_embed.backbone."): v.numpy() for k, v in model.state_dict().items()}
    conv = lambda key: sd[f"{key}.weight"].transpose(2, 3, 1, 0)  # noqa: E731  OIHW -> HWIO
    out["conv_root/kernel"] = conv("stem.conv")
    # Old (pre-linen) files keep GroupNorm parameters as (1, 1, 1, C).
    out["gn_root/scale"], out["gn_root/bias"] = (sd[f"stem.norm.{n}"].reshape(1, 1, 1, -1) for n in ("weight", "bias"))
    for i, stage in enumerate(model.patch_embed.backbone.stages):
        for j in range(len(stage.blocks)):
            src, dst = f"stages.{i}.blocks.{j}", f"block{i + 1}/unit{j + 1}"
            pairs = [(f"conv{k}", f"norm{k}", f"conv{k}", f"gn{k}") for k in (1, 2, 3)]
            if j == 0:
                pairs.append(("downsample.conv", "downsample.norm", "conv_proj", "gn_proj"))
            for conv_name, norm_name, jax_conv, jax_norm in pairs:
                out[f"{dst}/{jax_conv}/kernel"] = conv(f"{src}.{conv_name}")
                out[f"{dst}/{jax_norm}/scale"] = sd[f"{src}.{norm_name}.weight"]
                out[f"{dst}/{jax_norm}/bias"] = sd[f"{src}.{norm_name}.bias"]
    return out


def test_jax_hybrid_npz_matches_the_original_formulas(tmp_path):
    model = random_hybrid(activation="gelu_tanh")
    np.savez(tmp_path / "R26+ViT.npz", **to_jax_hybrid(model))
    checkpoint = read_checkpoint(tmp_path / "R26+ViT.npz")
    assert checkpoint.format == "jax" and checkpoint.config.stem == "R26x0.5" and checkpoint.config.num_heads == 4
    # The format sets the original code's conventions: (w - mean) / (std + 1e-5) and Flax's GroupNorm eps 1e-6.
    assert (checkpoint.config.stem_weight_std, checkpoint.config.stem_norm_eps) == ("jax", 1e-6)
    loaded = vitkit.load(tmp_path / "R26+ViT.npz").eval()
    want = reference_logits(images(), model.state_dict(), (2, 2, 4), heads=4, jax=True)
    assert relative_error(loaded(images()), want) < 1e-5  # float32 model vs float64 formulas
    # Under timm's conventions the same weights are 7e-5 away: the fields are what brings it within 1e-5.
    assert relative_error(model(images()), want) > 1e-5
    # The weight mapping itself is exact: with timm's conventions the loaded model is the source model.
    as_timm = VisionTransformer(loaded.config.replace(stem_weight_std="timm", stem_norm_eps=1e-5)).eval()
    as_timm.load_state_dict(loaded.state_dict())
    torch.testing.assert_close(as_timm(images()), model(images()), rtol=0, atol=0)


def test_stem_conventions_survive_a_native_round_trip(tmp_path):
    model = random_hybrid(stem_weight_std="jax", stem_norm_eps=1e-6)
    vitkit.save(model, tmp_path / "jax_hybrid")
    loaded = vitkit.load(tmp_path / "jax_hybrid").eval()
    assert (loaded.config.stem_weight_std, loaded.config.stem_norm_eps) == ("jax", 1e-6)
    assert loaded.patch_embed.backbone.stem.norm.eps == 1e-6
    torch.testing.assert_close(loaded(images()), model(images()), rtol=0, atol=0)


def test_unknown_weight_standardisation_is_refused():
    with pytest.raises(ValueError, match="stem_weight_std must be one of"):
        model_config("R50+B/16").replace(stem_weight_std="bit")


def test_foreign_stem_that_is_not_a_resnetv2_is_refused(tmp_path):
    state = {("pos_embed" if k == "pos_embed.weight" else k): v for k, v in random_hybrid().state_dict().items()}
    state = {k.replace("backbone.stem.conv.", "backbone.conv1.0."): v for k, v in state.items()}  # timm resnet26d
    torch.save(state, tmp_path / "resnet26d_hybrid.pth")
    with pytest.raises(ValueError, match="not the paper's ResNetV2 hybrid stem"):
        read_checkpoint(tmp_path / "resnet26d_hybrid.pth")
