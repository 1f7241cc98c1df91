"""Shared fixtures: deterministic torch, tiny configs."""

from __future__ import annotations

import pytest
import torch

from vitkit.models import ViTConfig


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Decoded images, probe results and features go to a temporary directory, never ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("VITKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_config() -> ViTConfig:
    """A 2-layer, 32-wide ViT on 16x16 images with 4x4 patches (16 patches), 5 classes."""
    return ViTConfig(
        img_size=16, patch_size=4, hidden_dim=32, depth=2, num_heads=4, mlp_dim=64, num_classes=5, zero_init_head=False
    )
