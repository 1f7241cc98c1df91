"""Few-shot linear evaluation (paper Sec. 4.1): the closed-form solver, the penalty choice, the command, its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.analysis import fewshot
from vitkit.analysis.fewshot import (
    choose_l2,
    fewshot_accuracy,
    fewshot_evaluate,
    loo_errors,
    pm_one_hot,
    ridge_fit,
    sample_shots,
)
from vitkit.cli.main import main


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))


def problem(n: int, dim: int, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features (n, dim) and {-1, 1} one-hot targets."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64) + 0.3
    return x, pm_one_hot(torch.arange(n) % classes, classes)


@pytest.mark.parametrize(("n", "dim"), [(30, 5), (6, 20)])  # more samples than features, and fewer
def test_ridge_fit_is_the_least_squares_solution(n, dim):
    x, y = problem(n, dim)
    l2 = 0.7
    weights, bias = ridge_fit(x, y, l2)
    # The same problem as one stacked least-squares system: [x 1; sqrt(l2) I 0] [W; b] = [y; 0].
    a = np.block([[x.numpy(), np.ones((n, 1))], [np.sqrt(l2) * np.eye(dim), np.zeros((dim, 1))]])
    b = np.concatenate([y.numpy(), np.zeros((dim, y.shape[1]))])
    want = np.linalg.lstsq(a, b, rcond=None)[0]
    np.testing.assert_allclose(weights.numpy(), want[:dim], atol=1e-10)
    np.testing.assert_allclose(bias.numpy(), want[dim], atol=1e-10)


@pytest.mark.parametrize(("n", "dim"), [(12, 4), (5, 9)])
def test_leave_one_out_errors_match_refitting_without_each_sample(n, dim):
    x, y = problem(n, dim, seed=1)
    grid = (0.01, 1.0, 100.0)
    errors = loo_errors(x, y, grid)
    for l2, got in zip(grid, errors.tolist(), strict=True):
        squared = []
        for i in range(n):
            keep = torch.arange(n) != i
            weights, bias = ridge_fit(x[keep], y[keep], l2)
            squared.append(((x[i] @ weights + bias - y[i]) ** 2).mean())
        assert got == pytest.approx(torch.stack(squared).mean().item(), rel=1e-8)
    assert choose_l2(x, y, grid) == grid[int(errors.argmin())]


def test_separable_features_are_classified_perfectly():
    generator = torch.Generator().manual_seed(2)
    labels = torch.arange(200) % 4
    centres = torch.eye(4, 16) * 10
    features = centres[labels] + torch.randn(200, 16, generator=generator)
    accuracy, l2 = fewshot_accuracy((features[:100], labels[:100]), (features[100:], labels[100:]), 5, seed=0)
    assert accuracy == 100.0 and l2 > 0


def test_shots_are_drawn_per_class_and_seeded():
    labels = torch.tensor([0, 1, 2] * 10)
    picked = sample_shots(labels, 4, seed=3)
    assert torch.bincount(labels[picked]).tolist() == [4, 4, 4]
    assert torch.equal(picked, sample_shots(labels, 4, seed=3)) and not torch.equal(picked, sample_shots(labels, 4, 4))


def tiny_checkpoint(folder: Path) -> Path:
    """A tiny random ViT for 16 px digits, saved with its preprocessing."""
    model = vitkit.create_model("mu/4", img_size=16, num_classes=10, hidden_dim=16, depth=1, num_heads=2, mlp_dim=32)
    metadata = {"data": {"img_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3}}
    return vitkit.save(model, folder / "vit", metadata=metadata)


def test_fewshot_on_digits_and_the_feature_cache(tmp_path, monkeypatch, capsys):
    checkpoint = tiny_checkpoint(tmp_path)
    report = fewshot_evaluate(checkpoint, "digits", [1, 5], seeds=2, device="cpu")
    assert report.num_classes == 10 and report.feature_dim == 16 and report.val_images == 179
    assert [r.shots for r in report.results] == [1, 5] and all(len(r.accuracies) == 2 for r in report.results)
    assert all(0 <= a <= 100 for r in report.results for a in r.accuracies)
    assert len(list((tmp_path / "cache").glob("fewshot-*.pt"))) == 2  # train and val features
    # The second run reads the features from the cache: extracting again would fail here.
    monkeypatch.setattr(fewshot, "extract_features", lambda *a, **k: pytest.fail("features were recomputed"))
    assert main(["fewshot", str(checkpoint), "--data", "digits", "--shots", "1", "5", "--seeds", "2", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["mean"] for r in printed["results"]] == pytest.approx([r.mean for r in report.results])
    assert main(["fewshot", str(checkpoint), "--data", "digits", "--shots", "1", "--seeds", "1"]) == 0
    assert "shots" in capsys.readouterr().out


def test_more_shots_than_the_smallest_class_is_refused(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path)
    assert main(["fewshot", str(checkpoint), "--data", "digits", "--shots", "1", "500"]) == 2
    assert "500 shots exceed the smallest class of the train split of digits" in capsys.readouterr().err


def test_one_class_data_is_refused(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(folder / f"{i}.png")
    with pytest.raises(ValueError, match="has 1 class: few-shot classification needs at least 2 class folders"):
        fewshot_evaluate(tiny_checkpoint(tmp_path), str(folder), [1], device="cpu")


def test_checkpoint_without_pre_logit_features_is_refused(tmp_path):
    vitkit.save(vitkit.create_model("resnet20", num_classes=10), tmp_path / "resnet")
    with pytest.raises(ValueError, match="has no pre-logit features .*needs a ViT checkpoint"):
        fewshot_evaluate(tmp_path / "resnet", "digits", [1], device="cpu")
