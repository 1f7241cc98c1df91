"""Attention rollout and mean attention distance: invariants and known answers on tiny models."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from vitkit import create_model
from vitkit.analysis import (
    attention_rollout,
    head_maps,
    last_layer_head_maps,
    mean_attention_distance,
    mean_distance_from_attentions,
    patch_distances,
    rollout_from_attentions,
    rollout_map,
)


def tiny(pool: str = "token", posemb: str = "learned", **overrides):
    """A 2-layer, 2-head ViT on 16x16 inputs with 4x4 patches (a 4x4 grid)."""
    torch.manual_seed(0)
    fields = dict(img_size=16, num_classes=3, depth=2, hidden_dim=16, mlp_dim=32, num_heads=2)
    return create_model("mu/4", pool=pool, posemb=posemb, **{**fields, **overrides}).eval()


def random_attention(batch: int, heads: int, tokens: int, seed: int) -> torch.Tensor:
    """Row-stochastic random attention probabilities."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, heads, tokens, tokens, generator=generator).softmax(dim=-1)


def uniform_mean_distance(grid: tuple[int, int], patch: tuple[int, int]) -> float:
    """Mean pixel distance between patch centres over all (query, key) pairs, self-pairs included."""
    cells = list(itertools.product(range(grid[0]), range(grid[1])))
    total = sum(math.hypot((a[0] - b[0]) * patch[0], (a[1] - b[1]) * patch[1]) for a in cells for b in cells)
    return total / len(cells) ** 2


def force_attention(monkeypatch, model, make):
    """Replace every layer's attention probabilities returned by forward_with_details with make(attn)."""
    real = model.forward_with_details

    def patched(images, attentions=True):
        output = real(images, attentions=True)
        output.attentions = [make(attn) for attn in output.attentions]
        return output

    monkeypatch.setattr(model, "forward_with_details", patched)


def test_rollout_rows_sum_to_one_and_match_the_definition():
    attns = [random_attention(2, 3, 5, seed) for seed in range(3)]
    rollout = rollout_from_attentions(attns)
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2, 5))
    expected = np.stack([np.eye(5)] * 2)
    for attn in attns:  # Abnar & Zuidema: 0.5 * mean-head attention + 0.5 * identity, applied layer after layer
        layer = 0.5 * attn.double().mean(dim=1).numpy() + 0.5 * np.eye(5)
        expected = layer @ expected
    np.testing.assert_allclose(rollout.numpy(), expected, atol=1e-6)


def test_identity_attention_gives_identity_rollout_and_zero_distance():
    attns = [torch.eye(17).expand(2, 2, 17, 17) for _ in range(3)]
    torch.testing.assert_close(rollout_from_attentions(attns), torch.eye(17).expand(2, 17, 17))
    distance = mean_distance_from_attentions(attns, (4, 4), (4, 4), num_prefix=1)
    assert distance.shape == (3, 2)
    assert torch.all(distance == 0)


def test_uniform_attention_gives_the_analytic_mean_distance():
    grid, patch = (3, 5), (4, 2)
    tokens = 1 + 15
    attns = [torch.full((1, 2, tokens, tokens), 1.0 / tokens)]
    distance = mean_distance_from_attentions(attns, grid, patch, num_prefix=1)
    np.testing.assert_allclose(distance.numpy(), uniform_mean_distance(grid, patch), rtol=1e-6)


def test_distance_ignores_attention_to_the_class_token():
    """Attention mass on the class token is dropped and the rest renormalised over patch keys."""
    tokens = 1 + 4
    attn = torch.zeros(1, 1, tokens, tokens)
    attn[..., 0] = 0.9
    attn[..., 1] = 0.1  # every query gives its patch attention to the top-left patch
    distance = mean_distance_from_attentions([attn], (2, 2), (8, 8), num_prefix=1)
    expected = (0 + 8 + 8 + math.hypot(8, 8)) / 4
    assert distance.item() == pytest.approx(expected, rel=1e-6)


def test_patch_distances_are_in_pixels():
    distances = patch_distances((2, 3), (16, 8))
    assert distances.shape == (6, 6)
    assert distances[0, 1].item() == pytest.approx(8)  # next column
    assert distances[0, 3].item() == pytest.approx(16)  # next row
    assert distances[0, 5].item() == pytest.approx(math.hypot(16, 16))


def test_maps_read_the_class_token_row_or_the_mean_over_tokens():
    attn = random_attention(1, 2, 5, seed=1)
    cls = head_maps(attn, (2, 2), num_prefix=1)
    torch.testing.assert_close(cls, attn[:, :, 0, 1:].reshape(1, 2, 2, 2))
    gap = head_maps(attn[:, :, 1:, 1:], (2, 2), num_prefix=0)
    torch.testing.assert_close(gap, attn[:, :, 1:, 1:].mean(dim=2).reshape(1, 2, 2, 2))
    rollout = rollout_from_attentions([attn])
    torch.testing.assert_close(rollout_map(rollout, (2, 2), 1), rollout[:, 0, 1:].reshape(1, 2, 2))


def test_bad_attention_shapes_are_refused():
    with pytest.raises(ValueError, match="expected \\(batch, heads, 17, 17\\)"):
        mean_distance_from_attentions([torch.ones(1, 2, 16, 16)], (4, 4), (4, 4), num_prefix=1)
    with pytest.raises(ValueError, match="at least one layer"):
        rollout_from_attentions([])


@pytest.mark.parametrize("pool", ["token", "gap"])
def test_model_rollout_at_another_resolution(pool):
    model = tiny(pool=pool)
    images = torch.randn(2, 3, 24, 16)  # not the 16x16 the model was built for: a 6x4 grid
    maps = attention_rollout(model, images)
    assert maps.shape == (2, 6, 4)
    assert np.all(maps > 0)
    if pool == "gap":  # no class token: the mean of rows that each sum to 1 sums to 1 over the patches
        np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    else:  # the class token keeps some of its own flow
        assert np.all(maps.sum(axis=(1, 2)) < 1.0)
    assert last_layer_head_maps(model, images).shape == (2, 2, 6, 4)


@pytest.mark.parametrize("pool", ["token", "gap"])
def test_model_with_zero_queries_and_keys_attends_uniformly(pool):
    """q = k = 0 makes every softmax uniform: the real model then has the analytic mean distance."""
    model = tiny(pool=pool)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.zero_()
            block.attn.qkv.bias.zero_()
    images = torch.randn(3, 3, 16, 24)
    distance = mean_attention_distance(model, images, batch_size=2)
    assert distance.shape == (2, 2)
    np.testing.assert_allclose(distance, uniform_mean_distance((4, 6), (4, 4)), rtol=1e-5)
    maps = attention_rollout(model, images)
    np.testing.assert_allclose(maps, np.broadcast_to(maps[:, :1, :1], maps.shape), rtol=1e-5)


@pytest.mark.parametrize("pool", ["token", "gap"])
def test_model_with_identity_attention(monkeypatch, pool):
    model = tiny(pool=pool)
    force_attention(monkeypatch, model, lambda attn: torch.eye(attn.shape[-1]).expand_as(attn).clone())
    images = torch.randn(2, 3, 16, 16)
    assert np.all(mean_attention_distance(model, images) == 0)
    maps = attention_rollout(model, images)
    # Identity rollout: the class token draws nothing from the patches; the token mean draws 1/N from each.
    np.testing.assert_allclose(maps, 0.0 if pool == "token" else 1 / 16, atol=1e-7)
