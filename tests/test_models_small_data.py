"""ViT options for small photo sets: SPT and LSA (Lee et al. 2021) and the convolutional stems at photo scale."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vitkit
from vitkit.errors import UsageError
from vitkit.models import ViTConfig, build_model, model_config
from vitkit.models.vit import ShiftedPatchEmbedding, attend, eager_attention, shift_image

TINY = {"depth": 2, "num_classes": 5, "zero_init_head": False}


# --- shifted patch tokenization ------------------------------------------------------------------------------


def test_shift_image_moves_pixels_and_fills_with_zeros():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    moved = shift_image(image, 1, 2)  # one down, two right
    assert moved[0, 0, 1, 2] == image[0, 0, 0, 0] and moved[0, 0, 3, 3] == image[0, 0, 2, 1]
    assert moved[0, 0, 0].abs().sum() == 0 and moved[0, 0, :, :2].abs().sum() == 0
    torch.testing.assert_close(shift_image(shift_image(image, -1, -1), 1, 1)[..., 1:, 1:], image[..., 1:, 1:])


def test_spt_concatenates_the_image_and_four_diagonal_half_patch_shifts():
    embed = ShiftedPatchEmbedding((4, 4), 3, 8)
    assert embed.shifts() == [(-2, -2), (-2, 2), (2, -2), (2, 2)]
    assert embed.proj.in_features == 5 * 3 * 4 * 4 and embed.norm.normalized_shape == (240,)
    images = torch.randn(2, 3, 8, 12)
    tokens, grid = embed(images)
    assert tokens.shape == (2, 6, 8) and grid == (2, 3)
    # The formula spelled out for one token: patch (row 1, col 2) of the five stacked images, LN, linear.
    stacked = torch.cat([images] + [shift_image(images, dy, dx) for dy, dx in embed.shifts()], 1)
    patch = stacked[0, :, 4:8, 8:12].permute(1, 2, 0).reshape(-1)
    torch.testing.assert_close(tokens[0, 1 * 3 + 2], embed.proj(embed.norm(patch)))


def test_spt_vit_shapes_resolution_and_round_trip(tmp_path):
    model = vitkit.create_model("Mini/4", img_size=16, spt=True, **TINY)
    assert isinstance(model.patch_embed, ShiftedPatchEmbedding)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    assert model(torch.randn(2, 3, 24, 24)).shape == (2, 5)  # position embeddings resampled, as for patches
    vitkit.save(model.eval(), tmp_path / "spt")
    loaded = vitkit.load(tmp_path / "spt").eval()
    x = torch.randn(2, 3, 16, 16)
    assert loaded.config.spt and torch.equal(loaded(x), model(x))


def test_spt_refuses_a_stem_and_sizes_the_patches_do_not_tile():
    with pytest.raises(UsageError, match="use one or the other"):
        model_config("conv2+Mini/4", spt=True)
    model = vitkit.create_model("Mini/4", img_size=16, spt=True, **TINY)
    with pytest.raises(UsageError, match="not divisible by patch size 4"):
        model(torch.randn(1, 3, 18, 18))


# --- locality self-attention ---------------------------------------------------------------------------------


def lsa_model(**changes) -> nn.Module:
    return build_model(
        ViTConfig(img_size=16, patch_size=4, hidden_dim=32, num_heads=4, mlp_dim=64, lsa=True, **{**TINY, **changes})
    )


def test_lsa_temperature_starts_at_sqrt_head_dim_and_is_learned_without_decay():
    model = lsa_model()
    attn = model.blocks[0].attn
    assert attn.temperature.item() == pytest.approx(math.sqrt(8))
    assert "blocks.0.attn.log_temperature" in model.no_weight_decay()
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert attn.log_temperature.grad is not None and attn.log_temperature.grad.abs() > 0
    assert vitkit.create_model("Mini/4", img_size=16, **TINY).blocks[0].attn.temperature is None


def test_lsa_masks_the_diagonal_and_divides_by_the_temperature():
    model = lsa_model().eval()
    with torch.no_grad():
        model.blocks[0].attn.log_temperature.fill_(math.log(0.7))
    x = torch.randn(2, 3, 16, 16)
    details = model.forward_with_details(x)
    first = details.attentions[0]
    assert first.diagonal(dim1=-2, dim2=-1).abs().max() == 0  # no token attends to itself
    torch.testing.assert_close(first.sum(-1), torch.ones_like(first.sum(-1)))
    # Block 0's attention spelled out: softmax(q k^T / tau) with the diagonal at -inf.
    block, z0 = model.blocks[0], details.hidden_states[0]
    q, k, _ = block.attn.qkv(block.norm1(z0)).reshape(2, 17, 3, 4, 8).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-2, -1) / 0.7).masked_fill(torch.eye(17, dtype=torch.bool), float("-inf"))
    torch.testing.assert_close(first, logits.softmax(-1))


def test_lsa_fused_and_eager_kernels_agree():
    model = lsa_model().eval()
    x = torch.randn(2, 3, 16, 16)
    fused = model(x)
    with eager_attention():
        eager = model(x)
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.forward_with_details(x).logits, fused, atol=1e-5, rtol=1e-5)


def test_attend_mask_keeps_only_allowed_pairs():
    q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
    mask = torch.ones(5, 5, dtype=torch.bool).tril()
    _, weights = attend(q, k, v, need_weights=True, mask=mask)
    assert weights.triu(1).abs().max() == 0
    torch.testing.assert_close(attend(q, k, v, mask=mask)[0], attend(q, k, v, need_weights=True, mask=mask)[0])


def test_lsa_with_patch_dropout_and_round_trip(tmp_path):
    model = lsa_model(patch_drop=0.5, pool="gap", posemb="sincos_2d")
    model.train()
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)  # fewer tokens: the mask follows their count
    with torch.no_grad():
        for block in model.blocks:
            block.attn.log_temperature.add_(0.3)
    model.eval()
    vitkit.save(model, tmp_path / "lsa")
    loaded = vitkit.load(tmp_path / "lsa").eval()
    x = torch.randn(2, 3, 16, 16)
    assert loaded.config.lsa and torch.equal(loaded(x), model(x))
    assert loaded.blocks[1].attn.temperature == model.blocks[1].attn.temperature


def test_rollout_of_an_lsa_model_has_rows_that_sum_to_one():
    from vitkit.analysis.attention import attention_rollout, model_attentions, rollout_from_attentions

    attentions, _ = model_attentions(lsa_model().eval(), torch.randn(2, 3, 16, 16))
    rollout = rollout_from_attentions(attentions)
    torch.testing.assert_close(rollout.sum(-1), torch.ones_like(rollout.sum(-1)))
    assert attention_rollout(lsa_model().eval(), torch.randn(2, 3, 16, 16)).shape == (2, 4, 4)


def test_spt_lsa_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vitkit.export import OnnxModel, export_onnx

    model = vitkit.create_model("Mini/4", img_size=16, spt=True, lsa=True, **TINY).eval()
    path = vitkit.save(model, tmp_path / "sl", metadata={"data": {"img_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}})
    out, _ = export_onnx(path, tmp_path / "sl.onnx")
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(images)
    torch.testing.assert_close(torch.from_numpy(OnnxModel(out).run(images)[0]), expected, atol=1e-4, rtol=0)


# --- stems at photo scale ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "grid"),
    [
        ("xres4+Ti/16", 128, 8),
        ("xres4+Ti/16", 224, 14),
        ("xres3+Ti/8", 128, 16),
        ("conv4+Ti/16", 128, 8),
        ("conv4+Ti/16", 224, 14),
        ("cct4+Ti/16", 128, 8),
        ("conv3+Ti/8", 160, 20),
    ],
)
def test_stems_tokenize_photos_to_the_expected_grid(name, size, grid):
    model = vitkit.create_model(name, img_size=size, depth=1, num_classes=3).eval()
    tokens, got = model.patch_embed(torch.randn(1, 3, size, size))
    assert got == (grid, grid) and tokens.shape == (1, grid * grid, 192)
    assert model(torch.randn(1, 3, size, size)).shape == (1, 3)


def test_xres_stem_is_the_xresnet_stem_then_strided_convolutions():
    model = vitkit.create_model("xres4+Ti/16", img_size=128, depth=1, num_classes=3)
    convs = [m for m in model.patch_embed.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 128, 256]
    assert [c.stride[0] for c in convs] == [2, 1, 1, 2, 2]
    assert isinstance(model.patch_embed.proj, nn.Conv2d) and model.patch_embed.proj.kernel_size == (1, 1)


@pytest.mark.parametrize(("name", "message"), [("xres1+Ti/2", "xres2' or more"), ("xres4+Ti/8", "needs patch size 16")])
def test_xres_stem_errors(name, message):
    with pytest.raises(UsageError, match=message):
        model_config(name)


def test_xres_hybrid_round_trip(tmp_path):
    model = vitkit.create_model("xres3+Mini/8", img_size=32, **TINY).eval()
    vitkit.save(model, tmp_path / "xres")
    loaded = vitkit.load(tmp_path / "xres").eval()
    x = torch.randn(2, 3, 32, 32)
    assert loaded.config.stem == "xres3" and torch.equal(loaded(x), model(x))


def test_vitkit_train_with_spt_and_lsa_flags(tmp_path):
    from vitkit.cli.main import main

    out = tmp_path / "run"
    argv = [
        "train", "--data", "digits", "--limit-per-class", "6", "--img-size", "16", "--model", "Mini/4", "--depth",
        "1", "--spt", "--lsa", "--batch-size", "20", "--epochs", "1", "--threads", "1", "--no-progress",
        "--precision", "fp32", "--warmup-steps", "1", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    model = vitkit.load(out / "checkpoints" / "last")
    assert model.config.spt and model.config.lsa and isinstance(model.patch_embed, ShiftedPatchEmbedding)


def test_analyze_an_spt_lsa_checkpoint(tmp_path):
    import numpy as np
    from PIL import Image

    from vitkit.analysis import analyze_checkpoint

    model = vitkit.create_model("Mini/8", img_size=32, spt=True, lsa=True, pool="gap", **TINY)
    vitkit.save(model, tmp_path / "ckpt", class_names=[f"c{i}" for i in range(5)])
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    analyze_checkpoint(tmp_path / "ckpt", tmp_path / "out", images=[image])
    html = (tmp_path / "out" / "report.html").read_text()
    assert "shifted-patch (SPT)" in html
