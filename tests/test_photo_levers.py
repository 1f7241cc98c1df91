"""Options for photos: repeated augmentation, evaluation above the training size (FixRes), progressive resizing
inside a time budget whose first epoch is longer than the budget."""

from __future__ import annotations

import time as real_time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vitkit.data import AugmentConfig, TensorSource, TrainAugment, make_loader
from vitkit.data.loader import repeated_order
from vitkit.inference.loading import native_metadata
from vitkit.training import load_config, train
from vitkit.training import trainer as trainer_module

TINY = {"data.limit_per_class": 5, "data.img_size": 8, "model.name": "Mini/4", "model.hidden_dim": 16,
        "model.depth": 1, "model.num_heads": 2, "model.mlp_dim": 16, "model.posemb": "learned", "run.epochs": 1,
        "run.batch_size": 8, "runtime.precision": "fp32"}  # fmt: skip


def test_repeated_order_keeps_the_epoch_length_and_repeats_each_drawn_image_in_a_row():
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    repeated = repeated_order(order, 3)
    assert len(repeated) == 10
    assert repeated.tolist() == [i for i in order[:4].tolist() for _ in range(3)][:10]
    assert repeated_order(order, 1).equal(order)


def test_repeated_copies_share_a_batch_and_are_augmented_differently():
    images = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    source = TensorSource(images, torch.arange(16) % 4, ["a", "b", "c", "d"])
    batch, labels = next(iter(make_loader(source, 8, shuffle=True, seed=0, epoch=0, repeats=2)))
    assert torch.equal(batch[0], batch[1]) and labels[0] == labels[1]
    config = AugmentConfig(randaugment_n=0, mixup=0, cutmix=0, random_erasing=0)
    augmented, _ = TrainAugment(config, 8, (0.5,) * 3, (0.5,) * 3, 4, seed=0)(batch, labels, step=0)
    assert not torch.allclose(augmented[0], augmented[1])  # two crops (and flips) of one image
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        AugmentConfig(repeats=0)


def test_a_run_with_repeated_augmentation_trains_and_records_it(tmp_path: Path):
    summary = train(load_config(overrides={**TINY, "augment.repeats": 3}), tmp_path / "run", progress_bar=False)
    assert summary["status"] == "finished"
    assert "repeats: 3" in (tmp_path / "run" / "config.yaml").read_text()


def test_validation_and_the_checkpoint_use_the_evaluation_size_above_the_training_size(tmp_path: Path, monkeypatch):
    seen = {"train": set(), "eval": set()}
    original = torch.nn.Conv2d.forward

    def spy(self, x):
        seen["train" if self.training else "eval"].add(x.shape[-1])
        return original(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", spy)
    train(load_config(overrides={**TINY, "data.eval_img_size": 12}), tmp_path / "run", progress_bar=False)
    assert seen == {"train": {8}, "eval": {12}}  # E_pos resampled from 2x2 to 3x3 for validation
    data = native_metadata(tmp_path / "run" / "checkpoints" / "best")["data"]
    assert data["img_size"] == 12 and data["train_img_size"] == 8  # what inference feeds, what training fed
    with pytest.raises(ValueError, match="eval_img_size 10 is not divisible by the patch size 4; use 8 or 12"):
        train(load_config(overrides={**TINY, "data.eval_img_size": 10}), tmp_path / "bad", progress_bar=False)


def test_progressive_resizing_inside_a_budget_shorter_than_one_epoch(tmp_path: Path, monkeypatch):
    fake = {"offset": 0.0}  # each training step takes 5 (fake) seconds more at 16 px, 1.25 s at 8 px
    clock = SimpleNamespace(perf_counter=lambda: real_time.perf_counter() + fake["offset"])
    monkeypatch.setattr(trainer_module, "time", clock)
    original, sizes = trainer_module.train_step, []

    def slow_step(learner, batch, *args):
        sizes.append(batch.images.shape[-1])
        fake["offset"] += 5.0 * (batch.images.shape[-1] / 16) ** 2
        return original(learner, batch, *args)

    monkeypatch.setattr(trainer_module, "train_step", slow_step)
    overrides = {**TINY, "data.limit_per_class": 40, "data.img_size": 16, "run.batch_size": 2, "run.epochs": 3,
                 "run.low_res_size": 8, "run.low_res_share": 0.5, "run.time_budget_min": 4.0}  # fmt: skip
    summary = train(load_config(overrides=overrides), tmp_path / "run", progress_bar=False)
    assert summary["wall_s"] <= 240 and summary["steps"] < 180  # 360 training images, 180 steps an epoch
    low = sizes.count(8)
    assert low > 0 and sizes == [8] * low + [16] * (len(sizes) - low)  # the low phase first, then full size
    low_s, full_s = low * 1.25, (len(sizes) - low) * 5.0
    assert 0.35 < low_s / (low_s + full_s) < 0.65  # about half the training time at the low size
