"""Native checkpoints: round trip, adapting to new classes / resolution, and every error a user can hit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.checkpoints import atomic_directory
from vitkit.checkpoints.native import CONFIG_FILE, WEIGHTS_FILE, load_class_names, resolve_checkpoint_dir
from vitkit.models import VisionTransformer, ViTConfig


@pytest.fixture
def saved(tmp_path: Path, tiny_config: ViTConfig) -> tuple[VisionTransformer, Path]:
    model = VisionTransformer(tiny_config).eval()
    path = vitkit.save(model, tmp_path / "ckpt", class_names=list("abcde"), metadata={"epoch": 3})
    return model, path


def test_round_trip_is_exact(saved: tuple[VisionTransformer, Path]) -> None:
    model, path = saved
    loaded = vitkit.load(path).eval()
    assert loaded.config == model.config
    images = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(images), model(images))
    assert loaded.class_names == list("abcde") == load_class_names(path)
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert json.loads((path / CONFIG_FILE).read_text())["metadata"] == {"epoch": 3}


@pytest.mark.parametrize("posemb", ["learned", "learned_2d", "sincos_2d", "none"])
def test_round_trip_every_posemb(tmp_path: Path, tiny_config: ViTConfig, posemb: str) -> None:
    model = VisionTransformer(tiny_config.replace(posemb=posemb, pool="gap")).eval()
    loaded = vitkit.load(vitkit.save(model, tmp_path / posemb)).eval()
    images = torch.randn(1, 3, 16, 16)
    assert torch.equal(loaded(images), model(images))


def test_new_classes_and_resolution_are_adapted_and_logged(
    saved: tuple[VisionTransformer, Path], caplog: pytest.LogCaptureFixture
) -> None:
    model, path = saved
    with caplog.at_level(logging.INFO, logger="vitkit"):
        adapted = vitkit.create_model(pretrained=path, num_classes=3, img_size=24).eval()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "resampled from a 4x4 grid (16x16 px) to 6x6 (24x24 px)" in lines[0]
    assert "head re-initialised (zeros) for 3 classes (was 5)" in lines[0]
    assert torch.count_nonzero(adapted.head.weight) == 0 and adapted.class_names is None
    # Loading at 24 px and running the original at 24 px resample E_pos through the same function.
    images = torch.randn(1, 3, 24, 24)
    torch.testing.assert_close(adapted.forward_features(images), model.forward_features(images))


def test_name_must_match_checkpoint(saved: tuple[VisionTransformer, Path]) -> None:
    _, path = saved
    with pytest.raises(ValueError, match="has hidden_dim=32 but model 'B/4' has 768"):
        vitkit.create_model("B/4", pretrained=path)


def test_mismatched_state_dict_names_keys_and_shapes(tmp_path: Path, tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config)
    path = vitkit.save(model, tmp_path / "ckpt")
    config_file = path / CONFIG_FILE
    document = json.loads(config_file.read_text())
    document["model"]["mlp_dim"] = 48
    document["model"]["representation_size"] = 8
    config_file.write_text(json.dumps(document))
    with pytest.raises(ValueError) as error:
        vitkit.load(path)
    message = str(error.value)
    assert "missing keys: pre_logits.bias, pre_logits.weight" in message
    assert "blocks.0.mlp.fc1.weight: checkpoint (64, 32) vs model (48, 32)" in message


def test_corrupt_and_missing_files_are_named(saved: tuple[VisionTransformer, Path], tmp_path: Path) -> None:
    _, path = saved
    weights = path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"cannot read {weights}.*truncated or corrupt"):
        vitkit.load(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vitkit.load(tmp_path / "nowhere")
    (path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="checkpoint vitkit can read|not valid JSON"):
        vitkit.load(path)


def test_atomic_directory_keeps_the_old_checkpoint_on_failure(saved: tuple[VisionTransformer, Path]) -> None:
    model, path = saved
    before = (path / WEIGHTS_FILE).read_bytes()
    with pytest.raises(RuntimeError), atomic_directory(path) as scratch:
        (scratch / WEIGHTS_FILE).write_bytes(b"partial")
        raise RuntimeError("killed mid-write")
    assert (path / WEIGHTS_FILE).read_bytes() == before
    assert not list(path.parent.glob("*.tmp-*"))


def test_interrupted_swap_is_recovered(saved: tuple[VisionTransformer, Path]) -> None:
    """A kill between the two renames leaves `<path>.old`, which loading finds and uses."""
    model, path = saved
    old = path.with_name(path.name + ".old")
    path.rename(old)
    assert resolve_checkpoint_dir(path) == old
    images = torch.randn(1, 3, 16, 16)
    assert torch.equal(vitkit.load(old).eval()(images), model(images))


def test_class_names_must_match_head(tiny_config: ViTConfig, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 class names given for a head of 5 classes"):
        vitkit.save(VisionTransformer(tiny_config), tmp_path / "x", class_names=["a", "b"])


def test_create_model_needs_name_or_checkpoint() -> None:
    with pytest.raises(ValueError, match="give a model name"):
        vitkit.create_model()
