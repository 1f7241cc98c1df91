"""The model as the paper writes it: eq. (1)-(4), every pooling / position-embedding mode, any resolution."""

from __future__ import annotations

import math

import pytest
import torch

from vitkit import configs
from vitkit.models import (
    ARCHITECTURES,
    VARIANTS,
    Model,
    VisionTransformer,
    ViTConfig,
    model_config,
    resample_posemb,
    sincos_2d,
)
from vitkit.models.posemb import resample_axis
from vitkit.models.registry import model_class
from vitkit.models.summary import summarize
from vitkit.models.vit import drop_path

ALL_POSEMBS = ["learned", "learned_2d", "sincos_2d", "none"]


def test_patch_embedding_is_flatten_times_E(tiny_config: ViTConfig) -> None:
    """Eq. (1): the stride-P convolution equals flattening each PxP patch and multiplying by E."""
    config = tiny_config.replace(img_size=(12, 20), patch_size=(3, 5))
    model = VisionTransformer(config)
    images = torch.randn(2, 3, 12, 20)
    tokens, grid = model.patch_embed(images)
    assert grid == (4, 4)
    patches = images.unfold(2, 3, 3).unfold(3, 5, 5)  # (B, C, gh, gw, 3, 5)
    flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(2, 16, 3 * 3 * 5)
    E = model.patch_embed.proj.weight.reshape(config.hidden_dim, -1).T
    expected = flat @ E + model.patch_embed.proj.bias
    torch.testing.assert_close(tokens, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("posemb", ALL_POSEMBS)
@pytest.mark.parametrize("pool", ["token", "gap"])
def test_every_mode_runs_at_any_resolution(tiny_config: ViTConfig, posemb: str, pool: str) -> None:
    model = VisionTransformer(tiny_config.replace(posemb=posemb, pool=pool)).eval()
    for size in [(16, 16), (24, 24), (12, 20)]:
        out = model.forward_with_details(torch.randn(2, 3, *size))
        grid = (size[0] // 4, size[1] // 4)
        tokens = grid[0] * grid[1] + (1 if pool == "token" else 0)
        assert out.logits.shape == (2, 5)
        assert out.grid == grid
        assert out.features.shape == (2, tokens, 32)
        assert len(out.hidden_states) == tiny_config.depth + 1
        assert [a.shape for a in out.attentions] == [(2, 4, tokens, tokens)] * tiny_config.depth


@pytest.mark.parametrize("posemb", ALL_POSEMBS)
def test_position_embedding_breaks_permutation_symmetry(tiny_config: ViTConfig, posemb: str) -> None:
    """Without E_pos a GAP ViT is blind to patch order; with any E_pos it is not."""
    model = VisionTransformer(tiny_config.replace(posemb=posemb, pool="gap")).eval()
    images = torch.randn(1, 3, 16, 16)
    # Swap the top-left and bottom-right 4x4 patches.
    swapped = images.clone()
    swapped[..., :4, :4], swapped[..., 12:, 12:] = images[..., 12:, 12:], images[..., :4, :4]
    same = torch.allclose(model(images), model(swapped), atol=1e-6)
    assert same == (posemb == "none")


def test_learned_2d_is_row_and_column_tables_concatenated(tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config.replace(posemb="learned_2d"))
    table = model.pos_embed((4, 4)).reshape(4, 4, 32)
    for i, j in [(0, 0), (1, 3), (3, 2)]:
        torch.testing.assert_close(table[i, j], torch.cat([model.pos_embed.row[i], model.pos_embed.col[j]]))


def test_sincos_matches_formula() -> None:
    grid, dim = (3, 5), 8
    table = sincos_2d(grid, dim)
    omega = [1.0, 1.0 / 100.0]  # 10000 ** -(k / (dim/4)) for k = 0, 1
    y, x = 2, 4
    row = table[y * grid[1] + x]
    expected = [math.sin(x * w) for w in omega] + [math.cos(x * w) for w in omega]
    expected += [math.sin(y * w) for w in omega] + [math.cos(y * w) for w in omega]
    torch.testing.assert_close(row, torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_sincos_is_not_saved(tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config.replace(posemb="sincos_2d"))
    assert not any(key.startswith("pos_embed") for key in model.state_dict())


def test_resample_keeps_prefix_and_constant_fields() -> None:
    posemb = torch.randn(1, 1 + 16, 8)
    posemb[:, 1:] = 0.5
    resized = resample_posemb(posemb, (6, 6), (4, 4), num_prefix_tokens=1)
    assert resized.shape == (1, 37, 8)
    torch.testing.assert_close(resized[:, 0], posemb[:, 0])
    torch.testing.assert_close(resized[:, 1:], torch.full((1, 36, 8), 0.5))
    assert resample_posemb(posemb, (4, 4), (4, 4), 1) is posemb
    assert resample_axis(torch.ones(4, 3), 7).shape == (7, 3)


def test_new_resolution_uses_resampled_embedding(tiny_config: ViTConfig) -> None:
    """The model at 24x24 adds exactly resample_posemb(E_pos) to its tokens."""
    model = VisionTransformer(tiny_config).eval()
    images = torch.randn(1, 3, 24, 24)
    z0, grid = model.embed(images)
    tokens, _ = model.patch_embed(images)
    expected_pos = resample_posemb(model.pos_embed.weight, (6, 6), (4, 4), 1)
    expected = torch.cat([model.cls_token, tokens], dim=1) + expected_pos
    torch.testing.assert_close(z0, expected)


@pytest.mark.parametrize("pool", ["token", "gap"])
def test_explicit_attention_equals_fused(tiny_config: ViTConfig, pool: str) -> None:
    model = VisionTransformer(tiny_config.replace(pool=pool)).eval()
    images = torch.randn(3, 3, 16, 16)
    fused = model(images)
    details = model.forward_with_details(images)
    torch.testing.assert_close(details.logits, fused, rtol=1e-5, atol=1e-5)
    for weights in details.attentions:
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    # The attention half of block 1 recomputed from the returned probabilities matches the fused kernel.
    block, x = model.blocks[0], details.hidden_states[0]
    qkv = block.attn.qkv(block.norm1(x)).reshape(3, -1, 3, 4, 8).permute(2, 0, 3, 1, 4)
    out = (details.attentions[0] @ qkv[2]).transpose(1, 2).reshape(x.shape)
    fused_out, _ = block.attn(block.norm1(x))
    torch.testing.assert_close(block.attn.proj(out), fused_out, rtol=1e-5, atol=1e-5)


def test_pooling_and_pre_logits(tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config.replace(representation_size=16)).eval()
    features = torch.randn(2, 17, 32)
    torch.testing.assert_close(
        model.forward_head(features, pre_logits=True), torch.tanh(model.pre_logits(features[:, 0]))
    )
    gap = VisionTransformer(tiny_config.replace(pool="gap")).eval()
    torch.testing.assert_close(gap.pool(features), features.mean(1))
    assert gap.cls_token is None


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_mlp_activation_is_exact_or_tanh_gelu(tiny_config: ViTConfig, activation: str) -> None:
    """Exact GELU x * Phi(x) (timm, Hugging Face), or flax's tanh approximation (the original JAX weights)."""
    mlp = VisionTransformer(tiny_config.replace(activation=activation)).blocks[0].mlp
    x = torch.randn(2, 5, 32, dtype=torch.float64) * 3
    mlp.double()
    h = mlp.fc1(x)
    if activation == "gelu":
        gelu = h * 0.5 * (1 + torch.erf(h / math.sqrt(2)))
    else:
        gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    torch.testing.assert_close(mlp(x), mlp.fc2(gelu), rtol=1e-12, atol=1e-12)


def test_stochastic_depth_rates_and_behaviour(tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config.replace(depth=5, drop_path=0.2))
    assert [round(b.drop_path_rate, 6) for b in model.blocks] == [0.0, 0.05, 0.1, 0.15, 0.2]
    x = torch.ones(1000, 4, 8)
    dropped = drop_path(x, 0.3, training=True)
    kept = dropped[:, 0, 0] != 0
    assert 0.6 < kept.float().mean() < 0.8
    torch.testing.assert_close(dropped[kept], torch.full_like(dropped[kept], 1 / 0.7))
    assert drop_path(x, 0.3, training=False) is x


def test_dropout_only_in_training(tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config.replace(dropout=0.5, attn_dropout=0.5, drop_path=0.5))
    images = torch.randn(2, 3, 16, 16)
    model.train()
    assert not torch.equal(model(images), model(images))
    model.eval()
    assert torch.equal(model(images), model(images))


def test_initialisation_follows_the_reference() -> None:
    config = model_config("Ti/16", num_classes=10)
    model = VisionTransformer(config)
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.cls_token) == 0
    bound = math.sqrt(6 / (192 + 192))  # xavier-uniform of each D x D q/k/v kernel
    qkv = model.blocks[0].attn.qkv.weight
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.95 * bound
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0
    assert 0 < model.blocks[0].mlp.fc1.bias.abs().max() < 1e-5
    assert 0.018 < model.pos_embed.weight.std() < 0.022
    assert torch.count_nonzero(VisionTransformer(config.replace(zero_init_head=False)).head.weight) > 0


def test_paper_table_1_parameter_counts() -> None:
    """ViT-Base 86M, ViT-Large 307M, ViT-Huge 632M (paper Table 1), within 2%."""
    for name, paper in [("B/16", 86e6), ("L/16", 307e6), ("H/14", 632e6)]:
        params = summarize(model_config(name)).params
        assert abs(params - paper) / paper < 0.02, (name, params)


def test_flops_are_measured_and_scale_with_tokens() -> None:
    b16, b32 = summarize(model_config("B/16")), summarize(model_config("B/32"))
    assert 34 < b16.gflops < 36  # 17.6 GMACs, as timm reports
    assert 3.5 < b16.gflops / b32.gflops < 4.5


def test_variant_strings_and_presets() -> None:
    config = model_config("Ti/4", img_size=32, num_classes=10)
    assert (config.hidden_dim, config.depth, config.mlp_dim, config.num_heads) == VARIANTS["Ti"]
    assert config.patch_size == (4, 4) and config.grid_size == (8, 8)
    preset = model_config("vit_base_patch16_224_in21k")
    assert preset.num_classes == 21843 and preset.representation_size == 768
    assert model_config("B/16", pool="gap", drop_path=0.1).pool == "gap"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"img_size": 225}, "image size 225 is not divisible by patch size 16; use an image size of 224 or 240"),
        (
            {"img_size": (224, 230)},
            "image width 230 is not divisible by patch size 16; use an image width of 224 or 240",
        ),
        ({"pool": "max"}, "pool must be one of"),
        ({"posemb": "rope"}, "posemb must be one of"),
        ({"num_heads": 5}, "hidden_dim 768 is not divisible by num_heads 5"),
        ({"dropout": 1.5}, "dropout must be in [0, 1)"),
        ({"activation": "relu"}, "activation must be one of ('gelu', 'gelu_tanh'), got 'relu'"),
        (
            {"distilled": True, "pool": "gap"},
            "distilled=True needs pool='token', got pool='gap': DeiT's distillation token is a second prefix token",
        ),
    ],
)
def test_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        model_config("B/16", **kwargs)


def test_model_name_and_field_errors() -> None:
    with pytest.raises(ValueError, match="unknown model 'X/16'"):
        model_config("X/16")
    with pytest.raises(ValueError, match=r"unknown ViT config field\(s\) \['widht'\]"):
        model_config("B/16", widht=3)


def test_forward_rejects_untileable_images(tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config)
    with pytest.raises(
        ValueError, match="image size 18 is not divisible by patch size 4; use an image size of 16 or 20"
    ):
        model(torch.randn(1, 3, 18, 18))
    with pytest.raises(ValueError, match="expected 3 image channels, got 1"):
        model(torch.randn(1, 1, 16, 16))


def test_no_weight_decay_names(tiny_config: ViTConfig) -> None:
    names = VisionTransformer(tiny_config).no_weight_decay()
    assert {"cls_token", "pos_embed.weight", "norm.weight", "blocks.0.attn.qkv.bias"} <= names
    assert "blocks.0.attn.qkv.weight" not in names and "patch_embed.proj.weight" not in names


def test_config_dict_round_trip(tiny_config: ViTConfig) -> None:
    config = tiny_config.replace(img_size=(16, 24), posemb="learned_2d", representation_size=8)
    assert configs.make(ViTConfig, config.to_dict()) == config
    config = tiny_config.replace(distilled=True, activation="gelu_tanh")
    assert configs.make(ViTConfig, config.to_dict()) == config


def test_every_architecture_names_a_model_class():
    """The registry names each family's model as "module:Class" (imported when a model is built): each resolves."""
    for architecture, (config_class, _) in ARCHITECTURES.items():
        cls = model_class(architecture)
        assert issubclass(cls, Model) and cls.__name__ != config_class.__name__, architecture
