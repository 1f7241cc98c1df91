"""Position-embedding similarity and patch-embedding filter PCA on tiny models with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitkit import create_model
from vitkit.analysis import embedding_filters, patch_position_embeddings, posemb_similarity, row_col_similarity


def tiny(posemb: str, pool: str = "token", img_size=16, patch: int = 4, hidden_dim: int = 16):
    """A one-layer ViT whose patch grid is img_size / patch."""
    torch.manual_seed(0)
    return create_model(
        f"mu/{patch}", img_size=img_size, posemb=posemb, pool=pool, num_classes=2, depth=1,
        hidden_dim=hidden_dim, mlp_dim=8, num_heads=2,
    )  # fmt: skip


def test_sincos_similarity_peaks_on_its_own_row_and_column():
    model = tiny("sincos_2d", img_size=(24, 32), hidden_dim=32)
    similarity = posemb_similarity(model)
    assert similarity.shape == (6, 8, 6, 8)
    for row, col in [(0, 0), (2, 5), (5, 7)]:
        assert np.unravel_index(similarity[row, col].argmax(), (6, 8)) == (row, col)
        assert similarity[row, col, row, col] == pytest.approx(1.0)
    summary = row_col_similarity(similarity)
    assert summary["same_row_or_col"] > summary["other"]


def test_learned_2d_similarity_has_row_and_column_structure_by_construction():
    """With one-hot row and column tables, cos((r, c), (r', c')) = ([r == r'] + [c == c']) / 2 exactly."""
    model = tiny("learned_2d", pool="gap", img_size=(12, 16), hidden_dim=16)  # 3x4 grid, 8 channels per axis
    with torch.no_grad():
        model.pos_embed.row.copy_(torch.eye(8)[:3])
        model.pos_embed.col.copy_(torch.eye(8)[3:7])
    similarity = posemb_similarity(model)
    rows, cols = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    same_row = rows[:, :, None, None] == rows[None, None]
    same_col = cols[:, :, None, None] == cols[None, None]
    np.testing.assert_allclose(similarity, (same_row.astype(float) + same_col) / 2, atol=1e-12)
    assert row_col_similarity(similarity) == {"same_row_or_col": pytest.approx(0.5), "other": pytest.approx(0.0)}


def test_learned_1d_excludes_the_class_token_position():
    model = tiny("learned")
    assert model.pos_embed.covers_prefix()
    embeddings = patch_position_embeddings(model)
    torch.testing.assert_close(embeddings, model.pos_embed.weight[0, 1:].detach())
    assert posemb_similarity(model).shape == (4, 4, 4, 4)


def test_row_col_summary_excludes_self_pairs():
    similarity = np.eye(4).reshape(2, 2, 2, 2)  # only self-pairs are similar
    assert row_col_similarity(similarity) == {"same_row_or_col": 0.0, "other": 0.0}


def test_no_position_embedding_is_said_plainly():
    with pytest.raises(ValueError, match="no position embedding"):
        posemb_similarity(tiny("none"))


def test_filters_are_the_top_principal_components_as_rgb_patches():
    model = tiny("learned", patch=4, hidden_dim=64)  # C*P*P = 48 values per filter, 64 filters
    filters = embedding_filters(model)
    assert filters.shape == (28, 4, 4, 3)
    weight = model.patch_embed.proj.weight.detach().double().reshape(64, -1).numpy()
    centred = weight - weight.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    top = vectors[:, ::-1][:, :28].T  # eigenvectors of the covariance, largest variance first
    flat = filters.transpose(0, 3, 1, 2).reshape(28, -1)  # back to the (C, P, P) flattening of the weight
    np.testing.assert_allclose(np.abs(np.sum(flat * top, axis=1)), 1.0, atol=1e-6)
    assert np.all(flat[np.arange(28), np.abs(flat).argmax(axis=1)] > 0)  # sign convention: largest entry positive


def test_fewer_filters_when_the_model_is_small():
    assert embedding_filters(tiny("learned", patch=2, hidden_dim=32)).shape == (12, 2, 2, 3)  # C*P*P = 12
    assert embedding_filters(tiny("learned", patch=4, hidden_dim=8)).shape == (7, 4, 4, 3)  # D - 1 = 7
    assert embedding_filters(tiny("learned", hidden_dim=64), num_components=5).shape == (5, 4, 4, 3)
