"""One normalisation, any channel count: `vitkit.data.normalize` used by training, distillation, export, analysis."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.analysis.inputs import denormalize as to_display
from vitkit.data import DataConfig
from vitkit.data.normalize import Normalize, denormalize, normalize
from vitkit.export.deployable import Exportable
from vitkit.training.config import load_config
from vitkit.training.distill import TeacherInputs
from vitkit.training.mpp import MaskedPatchPrediction
from vitkit.training.preflight import check_channels

MEANS = {1: (0.25,), 3: (0.1, 0.2, 0.3)}
STDS = {1: (0.5,), 3: (0.5, 0.25, 2.0)}


@pytest.mark.parametrize("channels", [1, 3])
def test_normalize_is_per_channel_and_inverts(channels: int) -> None:
    images = torch.rand(2, channels, 4, 4)
    mean, std = MEANS[channels], STDS[channels]
    expected = torch.stack([(images[:, c] - mean[c]) / std[c] for c in range(channels)], dim=1)
    assert torch.allclose(normalize(images, mean, std), expected)
    assert torch.equal(Normalize(mean, std)(images), normalize(images, mean, std))
    assert torch.allclose(denormalize(normalize(images, mean, std), mean, std), images, atol=1e-6)
    shown = to_display(normalize(images, mean, std), mean, std)  # analysis: (B, H, W, C) pixels for figures
    assert shown.shape == (2, 4, 4, channels) and abs(shown - images.permute(0, 2, 3, 1).numpy()).max() < 1e-6
    with pytest.raises(ValueError, match=f"do not have the {channels} channels of the normalisation"):
        normalize(torch.rand(2, channels + 1, 4, 4), mean, std)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_teacher_gets_its_own_normalisation_at_any_channel_count(channels: int) -> None:
    pixels = torch.rand(2, channels, 8, 8)
    student = ((0.5,) * channels, (0.5,) * channels)
    convert = TeacherInputs(*student, MEANS[channels], STDS[channels])
    assert torch.allclose(convert(normalize(pixels, *student)), normalize(pixels, MEANS[channels], STDS[channels]))


@pytest.mark.parametrize("channels", [1, 3])
def test_masked_patch_targets_read_the_pixels_of_any_channel_count(channels: int) -> None:
    model = vitkit.create_model("Mini/4", img_size=8, num_classes=2, hidden_dim=16, depth=1, num_heads=2, mlp_dim=16,
                                in_chans=channels)  # fmt: skip
    objective = MaskedPatchPrediction(16, (4, 4), MEANS[channels], STDS[channels], "l2", in_chans=channels)
    images = normalize(torch.rand(2, channels, 8, 8), MEANS[channels], STDS[channels])
    out = objective.loss(model, images, torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("channels", [1, 3])
def test_an_exported_graph_normalises_uint8_input_for_any_channel_count(channels: int) -> None:
    model = vitkit.create_model("Mini/4", img_size=8, num_classes=3, hidden_dim=16, depth=1, num_heads=2, mlp_dim=16,
                                in_chans=channels, zero_init_head=False).eval()  # fmt: skip
    wrapper = Exportable(model, list(MEANS[channels]), list(STDS[channels]), uint8_input=True).eval()
    raw = torch.randint(0, 256, (2, channels, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(normalize(raw.float() / 255, MEANS[channels], STDS[channels]))
        assert torch.equal(wrapper(raw), expected)


def test_the_recipe_takes_one_mean_and_std_per_channel() -> None:
    gray = load_config(overrides={"data.mean": (0.5,), "data.std": (0.25,), "model.in_chans": 1})
    assert gray.data.mean == (0.5,) and gray.model.overrides["in_chans"] == 1
    with pytest.raises(ValueError, match="one value per image channel each"):
        DataConfig(mean=(0.5, 0.5), std=(0.5,))
    model = vitkit.create_model("Mini/4", img_size=8, num_classes=2, in_chans=1)
    check_channels(gray, model)
    with pytest.raises(ValueError, match=r"have 3 values but the model takes 1-channel images \(model.in_chans\)"):
        check_channels(load_config(), model)
