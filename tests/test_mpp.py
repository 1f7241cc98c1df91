"""Masked patch prediction (paper Sec. 4.6): corruption proportions, colour targets, training, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vitkit
from vitkit.cli.main import main
from vitkit.data import DataConfig, load_dataset, make_loader
from vitkit.inference.device import autocast
from vitkit.models.vit import PatchEmbedding
from vitkit.training import TrainConfig, load_config
from vitkit.training.config import build_objective
from vitkit.training.finetune import finetune_config
from vitkit.training.mpp import (
    VAL_SEED,
    MaskedPatchPrediction,
    MPPSettings,
    colour_classes,
    corrupt_patches,
    mpp_targets,
    patches,
)
from vitkit.training.objectives import ValidationContext
from vitkit.training.state import STATE_FILE
from vitkit.training.trainer import create_trainer

TINY = [
    "--img-size", "16", "--model", "mu/4", "--hidden-dim", "32", "--depth", "2", "--num-heads", "2", "--mlp-dim", "64",
    "--batch-size", "8", "--threads", "1", "--no-progress", "--precision", "fp32", "--warmup-steps", "1",
]  # fmt: skip


def test_half_the_patches_are_corrupted_80_10_10():
    torch.manual_seed(0)
    tokens = torch.randn(64, 64, 8)  # every token distinct
    mask = torch.full((8,), 100.0)
    out, corrupted = corrupt_patches(tokens, mask, 0.5)
    assert corrupted.sum(1).eq(32).all()  # exactly half of each image
    assert torch.equal(out[~corrupted], tokens[~corrupted])
    masked = (out == 100.0).all(-1)
    kept = (out == tokens).all(-1) & corrupted
    replaced = corrupted & ~masked & ~kept
    total = corrupted.sum().item()  # 2048
    assert not (masked & ~corrupted).any()
    assert masked.sum() / total == pytest.approx(0.8, abs=0.03)
    assert replaced.sum() / total == pytest.approx(0.1, abs=0.02)
    assert kept.sum() / total == pytest.approx(0.1, abs=0.02)
    # A replaced patch takes the embedding of another patch of the batch.
    pool = tokens.reshape(-1, 8)
    for token in out[replaced][:50]:
        assert (pool == token).all(-1).sum() == 1


def test_patches_follow_the_patch_embedding_order():
    images = torch.zeros(1, 3, 8, 12)
    for row in range(2):
        for col in range(3):
            images[0, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = row * 3 + col
    cut = patches(images, (4, 4))
    assert cut.shape == (1, 6, 3, 4, 4) and cut.mean(dim=(2, 3, 4)).tolist() == [[0, 1, 2, 3, 4, 5]]


def test_patch_tokens_equal_the_cut_patches():
    embed = PatchEmbedding((4, 4), 3, 48)
    with torch.no_grad():  # an embedding that copies each patch's pixels
        embed.proj.weight.copy_(torch.eye(48).view(48, 3, 4, 4))
        embed.proj.bias.zero_()
    images = torch.randn(2, 3, 8, 12)
    tokens, _ = embed(images)
    assert torch.allclose(tokens, patches(images, (4, 4)).flatten(2), atol=1e-6)


def colour_image(colours: list[list[tuple[int, int, int]]], cell: int) -> torch.Tensor:
    """A (1, 3, H, W) image in [0, 1] of constant cells; colours are 3-bit levels 0..7 (cell centres)."""
    rows = []
    for line in colours:
        rows.append(torch.cat([torch.tensor(c).float().add(0.5).div(8).view(3, 1, 1).expand(3, cell, cell)
                               for c in line], dim=2))  # fmt: skip
    return torch.cat(rows, dim=1)[None]


def test_mean_colour_targets_are_the_3_bit_classes():
    levels = [[(7, 0, 0), (0, 7, 0)], [(1, 2, 3), (7, 7, 7)]]
    raw = colour_image(levels, 4)
    targets = mpp_targets(raw, raw * 2 - 1, (4, 4), "mean3bit")
    assert targets.tolist() == [[7 * 64, 7 * 8, 1 * 64 + 2 * 8 + 3, 511]]
    assert colour_classes(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])).tolist() == [0, 511]


def test_4x4_targets_are_the_downsized_patch_in_3_bit_colours():
    # One 8x8 patch made of 16 constant 2x2 cells with known levels.
    levels = [[(r, c, (r + c) % 8) for c in range(4)] for r in range(4)]
    raw = colour_image(levels, 2)
    targets = mpp_targets(raw, raw, (8, 8), "4x4")
    assert targets.shape == (1, 1, 16)
    assert targets[0, 0].tolist() == [r * 64 + c * 8 + (r + c) % 8 for r in range(4) for c in range(4)]


def test_l2_targets_are_the_normalised_pixels():
    normalised = torch.randn(2, 3, 8, 8)
    targets = mpp_targets(normalised, normalised, (4, 4), "l2")
    assert targets.shape == (2, 4, 48) and torch.equal(targets[1, 3], normalised[1, :, 4:, 4:].flatten())


def tiny_vit(patch: int = 4) -> torch.nn.Module:
    """A 16 px ViT with the given patch size."""
    return vitkit.create_model(
        "mu/4", img_size=16, patch_size=patch, num_classes=1, hidden_dim=32, depth=2, num_heads=2, mlp_dim=64
    )


@pytest.mark.parametrize("target", ["mean3bit", "4x4", "l2"])
def test_a_few_steps_lower_the_loss(target):
    torch.manual_seed(0)
    # Four constant 8x8 quadrants per image: a corrupted patch's colour can be read from its neighbours.
    model, images = tiny_vit(), torch.nn.functional.interpolate(torch.rand(16, 3, 2, 2), size=16) * 2 - 1
    objective = MaskedPatchPrediction(32, (4, 4), (0.5,) * 3, (0.5,) * 3, target)
    optimizer = torch.optim.AdamW([*model.parameters(), *objective.parameters()], lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    first = objective.loss(model, images, generator).loss.item()
    for _ in range(15):
        loss = objective.loss(model, images).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert objective.loss(model, images, torch.Generator().manual_seed(1)).loss.item() < 0.8 * first
    assert objective.mask_token.grad is not None and model.head.weight.grad is None  # the model's head is unused


def test_4x4_needs_patches_divisible_by_4_and_mpp_needs_a_vit():
    with pytest.raises(ValueError, match="mpp_target '4x4' needs a patch size divisible by 4"):
        MaskedPatchPrediction(32, (6, 6), (0.5,) * 3, (0.5,) * 3, "4x4")
    config = TrainConfig().replace({"objective.name": "mpp"})
    with pytest.raises(ValueError, match="objective mpp needs a ViT"):
        build_objective(config, vitkit.create_model("resnet20", num_classes=3), 3)


def image_folder(root: Path, count: int = 24) -> Path:
    """A flat folder of random 16 px PNGs (no class sub-folders)."""
    root.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        pixels = torch.randint(0, 256, (16, 16, 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"{i:02d}.png")
    return root


def test_pretrain_a_flat_folder_then_finetune_the_checkpoint(tmp_path):
    data = image_folder(tmp_path / "images")
    splits = load_dataset(DataConfig(path=str(data), img_size=16))
    assert splits.class_names == ["images"] and len(splits.train) + len(splits.val) == 24
    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(data), *TINY, "--epochs", "2", "--out", str(out)]) == 0
    # The model checkpoint is a plain ViT; the objective's head and [mask] embedding are in the training state only.
    weights = load_file(out / "checkpoints" / "best" / "model.safetensors")
    assert set(weights) == set(tiny_vit().state_dict())
    state = torch.load(out / "checkpoints" / "last" / STATE_FILE, weights_only=True)
    assert {"mask_token", "head.weight", "head.bias"} == set(state["objective"])
    summary = (out / "summary.json").read_text()
    assert '"objective": "mpp"' in summary and '"best_metric": "loss"' in summary
    config = finetune_config(out, "digits", 32, {"data.limit_per_class": 3, "run.batch_size": 10})
    trainer = create_trainer(config, tmp_path / "unused")
    pretrained = vitkit.load(out / "checkpoints" / "best")
    assert torch.equal(trainer.learner.model.blocks[1].mlp.fc2.weight, pretrained.blocks[1].mlp.fc2.weight)
    assert trainer.learner.model.config.num_classes == 10 and not trainer.learner.model.head.weight.any()
    trainer.runtime.close()


def test_validation_corrupts_the_same_patches_every_time(tmp_path):
    config = TrainConfig().replace(
        {
            "objective.name": "mpp",
            "data.limit_per_class": 4,
            "run.batch_size": 8,
            "model.depth": 1,
            "runtime.threads": 1,
            "runtime.precision": "fp32",
        }  # fmt: skip
    )
    trainer = create_trainer(config, tmp_path / "unused")
    context = ValidationContext(trainer.inputs.data.val, trainer.inputs.eval_transform, 16, torch.device("cpu"), "fp32")
    first = trainer.learner.objective.validate(trainer.learner.model, context)
    second = trainer.learner.objective.validate(trainer.learner.model, context)
    assert first.values == second.values and first.images == len(trainer.inputs.data.val)
    trainer.runtime.close()


def hand_written_validation(objective, model, context):
    """MPP's validation as it was written before it used the shared evaluation loop (the reference numbers)."""
    model.eval()
    objective.eval()
    generator = torch.Generator(device=context.device).manual_seed(VAL_SEED)
    sums = {"loss": 0.0, "acc": 0.0}
    loader = make_loader(context.source, context.batch_size, shuffle=False, seed=0, epoch=0, device=context.device)
    with torch.no_grad():
        for images, _ in loader:
            with autocast(context.precision, context.device):
                out = objective.loss(model, context.transform(images), generator)
            for key in sums:
                sums[key] += out.metrics[key].item() * len(images)
    return {key: value / len(context.source) for key, value in sums.items()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_validation_through_the_shared_loop_gives_the_same_numbers(tmp_path, precision):
    config = TrainConfig().replace(
        {
            "objective": {"name": "mpp", "mpp": {"target": "4x4"}},
            "data.limit_per_class": 4,
            "run.batch_size": 8,
            "model.depth": 1,
            "runtime.threads": 1,
            "runtime.precision": "fp32",
        }  # fmt: skip
    )
    trainer = create_trainer(config, tmp_path / "unused")
    trainer.learner.model.train()
    inputs = trainer.inputs
    context = ValidationContext(inputs.data.val, inputs.eval_transform, 7, torch.device("cpu"), precision)
    result = trainer.learner.objective.validate(trainer.learner.model, context)
    assert trainer.learner.model.training and trainer.learner.objective.training  # modes restored
    assert result.values == hand_written_validation(trainer.learner.objective, trainer.learner.model, context)
    trainer.runtime.close()


def test_mpp_settings_live_in_their_section_and_old_keys_translate(tmp_path):
    recipe = tmp_path / "old.yaml"
    recipe.write_text("objective:\n  name: mpp\n  mpp_target: l2\n  mpp_corrupt: 0.25\n")
    old = load_config(recipe)
    assert old.objective.settings == MPPSettings(target="l2", corrupt=0.25)
    assert old.to_dict()["objective"] == {"name": "mpp", "mpp": {"target": "l2", "corrupt": 0.25}}
    flags = load_config(None, {"objective.name": "mpp", "objective.mpp.target": "l2", "objective.mpp.corrupt": 0.25})
    assert flags == old
    with pytest.raises(ValueError, match=r"objective.mpp.target must be one of .*got 'rgb'"):
        load_config(None, {"objective.mpp.target": "rgb"})
    with pytest.raises(ValueError, match=r"objective.mpp.corrupt must be in \(0, 1\]"):
        load_config(None, {"objective.mpp_corrupt": 1.5})


def test_supervised_training_on_one_class_is_refused(tmp_path, capsys):
    data = image_folder(tmp_path / "images")
    assert main(["train", "--data", str(data), *TINY, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    assert "needs labelled data with at least 2 class folders" in capsys.readouterr().err


def test_pretrain_needs_a_self_supervised_objective(tmp_path, capsys):
    data = image_folder(tmp_path / "images")
    assert main(["pretrain", "--data", str(data), "--objective", "supervised", "--out", str(tmp_path / "r")]) == 2
    assert "vitkit pretrain is self-supervised" in capsys.readouterr().err
