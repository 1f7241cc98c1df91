"""DeiT's distillation token as a model option: tokens, position embeddings, two heads, saving and resampling."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.models import VisionTransformer, ViTConfig, model_config, resample_posemb
from vitkit.models.summary import summarize


@pytest.fixture
def distilled(tiny_config: ViTConfig) -> VisionTransformer:
    """A tiny distilled ViT (16 patches + 2 prefix tokens) with random, non-zero heads and tokens."""
    model = VisionTransformer(tiny_config.replace(distilled=True))
    with torch.no_grad():
        model.cls_token.normal_()
        model.dist_token.normal_()
    return model.eval()


def images(size: int = 16) -> torch.Tensor:
    """A fixed batch of two images."""
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))


def test_two_prefix_tokens_with_their_own_positions(distilled: VisionTransformer) -> None:
    assert distilled.num_prefix_tokens == distilled.config.num_prefix_tokens == 2
    assert distilled.pos_embed.weight.shape == (1, 2 + 16, 32) and distilled.pos_embed.covers_prefix()
    x = images()
    z0, grid = distilled.embed(x)
    patches, _ = distilled.patch_embed(x)
    prefix = torch.cat([distilled.cls_token, distilled.dist_token], dim=1).expand(2, -1, -1)
    torch.testing.assert_close(z0, torch.cat([prefix, patches], dim=1) + distilled.pos_embed.weight)
    assert grid == (4, 4) and distilled.forward_features(x).shape == (2, 18, 32)


def test_two_heads_and_their_average_at_inference(distilled: VisionTransformer) -> None:
    features = distilled.forward_features(images())
    logits = distilled.forward_heads(features)
    assert set(logits) == {"cls", "dist"}
    torch.testing.assert_close(logits["cls"], distilled.head(features[:, 0]))
    torch.testing.assert_close(logits["dist"], distilled.head_dist(features[:, 1]))
    assert not torch.allclose(logits["cls"], logits["dist"])
    # DeiT's inference rule: the mean of the two heads' logits, which `forward` (so eval/predict) returns.
    torch.testing.assert_close(distilled(images()), (logits["cls"] + logits["dist"]) / 2)
    torch.testing.assert_close(distilled.forward_head(features, pre_logits=True), (features[:, 0] + features[:, 1]) / 2)


def test_plain_vit_has_one_head(tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config).eval()
    features = model.forward_features(images())
    logits = model.forward_heads(features)
    assert set(logits) == {"cls"} and model.head_dist is None and model.dist_token is None
    torch.testing.assert_close(model(images()), logits["cls"])


def test_pre_logits_serve_both_heads(tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config.replace(distilled=True, representation_size=8)).eval()
    features = torch.randn(2, 18, 32)
    logits = model.forward_heads(features)
    torch.testing.assert_close(logits["dist"], model.head_dist(torch.tanh(model.pre_logits(features[:, 1]))))


def test_heads_are_zeroed_like_the_paper_head(tiny_config: ViTConfig) -> None:
    zeroed = VisionTransformer(tiny_config.replace(distilled=True, zero_init_head=True))
    assert torch.count_nonzero(zeroed.head_dist.weight) == 0 and torch.count_nonzero(zeroed.head_dist.bias) == 0
    assert torch.count_nonzero(zeroed.head.weight) == 0
    assert 0.01 < zeroed.dist_token.std() < 0.03  # DeiT's trunc-normal(0.02); the class token stays zero
    xavier = VisionTransformer(tiny_config.replace(distilled=True))
    assert torch.count_nonzero(xavier.head_dist.weight) > 0
    assert not torch.equal(xavier.head_dist.weight, xavier.head.weight)
    assert {"dist_token", "cls_token", "head_dist.bias"} <= xavier.no_weight_decay()
    assert "head_dist.weight" not in xavier.no_weight_decay()


def test_headless_distilled_model_averages_the_two_tokens(tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config.replace(distilled=True, num_classes=0)).eval()
    features = model.forward_features(images())
    torch.testing.assert_close(model(images()), (features[:, 0] + features[:, 1]) / 2)


def test_details_carry_both_tokens(distilled: VisionTransformer) -> None:
    out = distilled.forward_with_details(images())
    assert out.features.shape == (2, 18, 32) and out.grid == (4, 4)
    assert [a.shape for a in out.attentions] == [(2, 4, 18, 18)] * 2
    torch.testing.assert_close(out.logits, distilled(images()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.features, distilled.forward_features(images()), rtol=1e-5, atol=1e-5)


def test_corrupt_hook_sees_patch_embeddings_before_prefix_and_posemb(distilled: VisionTransformer) -> None:
    seen = []

    def mask_all(tokens: torch.Tensor) -> torch.Tensor:
        seen.append(tokens.shape)
        return torch.zeros_like(tokens)

    z0, _ = distilled.embed(images(), corrupt=mask_all)
    assert seen == [(2, 16, 32)]  # (B, N, D): only the patches, before x_class, x_dist and E_pos
    prefix = torch.cat([distilled.cls_token, distilled.dist_token], dim=1).expand(2, -1, -1)
    expected = torch.cat([prefix, torch.zeros(2, 16, 32)], dim=1) + distilled.pos_embed.weight
    torch.testing.assert_close(z0, expected)
    features = distilled.forward_features(images(), corrupt=lambda tokens: tokens)
    torch.testing.assert_close(features, distilled.forward_features(images()))
    assert not torch.allclose(distilled.forward_features(images(), corrupt=mask_all), features)


def test_any_resolution_keeps_both_prefix_positions(distilled: VisionTransformer) -> None:
    x = images(24)
    z0, grid = distilled.embed(x)
    want = resample_posemb(distilled.pos_embed.weight, (6, 6), (4, 4), num_prefix_tokens=2)
    patches, _ = distilled.patch_embed(x)
    prefix = torch.cat([distilled.cls_token, distilled.dist_token], dim=1).expand(2, -1, -1)
    torch.testing.assert_close(z0, torch.cat([prefix, patches], dim=1) + want)
    torch.testing.assert_close(want[:, :2], distilled.pos_embed.weight[:, :2])


def test_native_round_trip(distilled: VisionTransformer, tmp_path: Path) -> None:
    vitkit.save(distilled, tmp_path / "deit")
    document = json.loads((tmp_path / "deit" / "config.json").read_text())
    assert document["model"]["distilled"] is True and document["model"]["activation"] == "gelu"
    loaded = vitkit.load(tmp_path / "deit").eval()
    assert loaded.config == distilled.config
    assert torch.equal(loaded(images()), distilled(images()))


def test_old_config_json_loads_with_defaults(tiny_config: ViTConfig, tmp_path: Path) -> None:
    model = VisionTransformer(tiny_config).eval()
    vitkit.save(model, tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    document = json.loads(path.read_text())
    del document["model"]["activation"], document["model"]["distilled"]  # written before these fields existed
    path.write_text(json.dumps(document))
    loaded = vitkit.load(tmp_path / "old").eval()
    assert loaded.config.activation == "gelu" and not loaded.config.distilled
    assert torch.equal(loaded(images()), model(images()))


def test_new_resolution_and_classes_keep_both_prefix_tokens(
    distilled: VisionTransformer, tmp_path: Path, caplog
) -> None:
    vitkit.save(distilled, tmp_path / "deit")
    with caplog.at_level(logging.INFO, logger="vitkit.checkpoints.adapt"):
        loaded = vitkit.create_model(pretrained=tmp_path / "deit", img_size=24, num_classes=3)
    assert "4x4 grid" in caplog.text and "head re-initialised (zeros) for 3 classes" in caplog.text
    want = resample_posemb(distilled.pos_embed.weight.detach(), (6, 6), (4, 4), num_prefix_tokens=2)
    assert loaded.pos_embed.weight.shape == (1, 2 + 36, 32)
    torch.testing.assert_close(loaded.pos_embed.weight.detach(), want)
    torch.testing.assert_close(loaded.pos_embed.weight[:, :2], distilled.pos_embed.weight[:, :2])
    torch.testing.assert_close(loaded.dist_token, distilled.dist_token)
    for head in (loaded.head, loaded.head_dist):
        assert head.weight.shape == (3, 32) and torch.count_nonzero(head.weight) == 0


def test_deit_presets() -> None:
    config = model_config("deit_tiny_distilled_patch16_224")
    assert config.distilled and config.num_prefix_tokens == 2 and config.hidden_dim == 192
    assert not model_config("deit_small_patch16_224").distilled
    # timm's deit_tiny_distilled_patch16_224 has 5,910,800 parameters (deit_tiny_patch16_224: 5,717,416).
    assert summarize(config).params == 5_910_800
    assert summarize(model_config("deit_tiny_patch16_224")).params == 5_717_416


def test_preset_name_must_match_distillation(tmp_path: Path) -> None:
    model = VisionTransformer(model_config("deit_tiny_patch16_224", img_size=32))
    vitkit.save(model, tmp_path / "plain")
    with pytest.raises(ValueError, match="has distilled=False but model 'deit_tiny_distilled_patch16_224' has True"):
        vitkit.create_model("deit_tiny_distilled_patch16_224", pretrained=tmp_path / "plain")
