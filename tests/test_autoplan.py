"""Data-aware defaults: the planner's choices for different data and budgets, and `vitkit train --data DIR`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from vitkit.cli.main import main
from vitkit.training import autoplan
from vitkit.training.autoplan import (
    PHOTO_HYBRID,
    PHOTO_LARGE,
    PHOTO_LOW_RES,
    PHOTO_SMALL,
    SMALL_IMAGES,
    DatasetStats,
    make_plan,
    read_stats,
)

TINY = DatasetStats(train_images=90, val_images=10, classes=10, short_side=32)
PHOTOS = DatasetStats(train_images=9000, val_images=3900, classes=40, short_side=300)
FAST = {(SMALL_IMAGES.label, 32): 2e-4, (PHOTO_LARGE.label, 128): 2e-3, (PHOTO_HYBRID.label, 128): 8e-4,
        (PHOTO_SMALL.label, 128): 5e-4, (PHOTO_LOW_RES.label, 96): 7e-4, (PHOTO_LOW_RES.label, 64): 2.5e-4}  # fmt: skip


def folder(root: Path, classes: int, per_class: int, size: tuple[int, int]) -> Path:
    """root/<class>/<i>.jpg: `per_class` noisy JPEGs of `size` in each of `classes` classes."""
    rng = np.random.default_rng(0)
    for label in range(classes):
        for index in range(per_class):
            path = root / f"class{label:02d}" / f"{index}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
    return root


def test_small_images_are_trained_near_their_size_with_light_augmentation_for_few_epochs():
    recipe = make_plan(TINY, FAST, epochs=5).recipe()
    assert recipe["data"]["img_size"] == 32 and recipe["model"]["name"] == SMALL_IMAGES.name
    assert recipe["augment"]["crop"] == "pad" and recipe["augment"]["mixup"] == 0.0
    assert recipe["augment"]["randaugment_n"] == 0
    assert recipe["run"]["epochs"] == 5 and recipe["run"]["time_budget_min"] == 0.0
    assert recipe["run"]["batch_size"] == 8  # 90 images: at least 8 steps an epoch
    assert recipe["optim"]["optimizer"] == "muon" and recipe["optim"]["muon_convs"] is SMALL_IMAGES.muon_convs is True


def test_photos_get_128_px_the_hybrid_its_rate_and_imagenet_statistics():
    recipe = make_plan(PHOTOS, FAST, epochs=5).recipe()
    assert recipe["data"]["img_size"] == 128 and recipe["model"]["name"] == PHOTO_HYBRID.name
    assert recipe["optim"]["lr"] == PHOTO_HYBRID.lr == 2e-3
    assert recipe["optim"]["muon_convs"] is True and PHOTO_SMALL.muon_convs is False
    assert recipe["data"]["mean"] == autoplan.IMAGENET_MEAN and recipe["augment"]["crop"] == "rrc"
    assert recipe["run"]["batch_size"] == 128


def test_long_schedules_get_strong_regularisation_and_the_larger_model():
    short = make_plan(PHOTOS, FAST, epochs=10).recipe()
    medium = make_plan(PHOTOS, FAST, epochs=30).recipe()
    long = make_plan(PHOTOS, FAST, epochs=80).recipe()
    assert [plan["augment"]["randaugment_n"] for plan in (short, medium, long)] == [0, 1, 2]
    assert short["augment"]["mixup"] == medium["augment"]["mixup"] == 0.0 < long["augment"]["mixup"]
    assert short["model"]["drop_path"] < medium["model"]["drop_path"] < long["model"]["drop_path"]
    assert long["model"]["name"] == PHOTO_LARGE.name and short["model"]["name"] == PHOTO_HYBRID.name


def test_a_budget_on_a_slow_machine_lowers_the_resolution_and_plans_the_epochs():
    generous = make_plan(PHOTOS, FAST, budget_min=30).recipe()
    slow = {key: seconds * 60 for key, seconds in FAST.items()}  # 128: 5.5 epochs, 96: 4, 64: 11
    tight = make_plan(PHOTOS, slow, budget_min=30).recipe()
    assert generous["data"]["img_size"] == 128 and tight["data"]["img_size"] == 64
    assert generous["run"]["time_budget_min"] == tight["run"]["time_budget_min"] == 30
    # Neither --epochs nor a budget: the stated default budget.
    assert make_plan(PHOTOS, FAST).recipe()["run"]["time_budget_min"] == autoplan.DEFAULT_BUDGET_MIN


def test_only_what_the_choice_needs_is_timed():
    def timer(timings):
        def time_pairs(pairs):
            timed.extend((model.label, size) for model, size in pairs)
            return {(model.label, size): timings[(model.label, size)] for model, size in pairs}

        return time_pairs

    timed = []
    plan, _ = autoplan.plan_run(PHOTOS, timer(FAST), budget_min=30)
    assert timed == [(PHOTO_SMALL.label, 128), (PHOTO_HYBRID.label, 128), (PHOTO_LARGE.label, 128)]
    assert plan.model is PHOTO_LARGE
    timed = []
    slow = {key: seconds * 60 for key, seconds in FAST.items()}
    plan, _ = autoplan.plan_run(PHOTOS, timer(slow), budget_min=30)
    assert timed == [(PHOTO_SMALL.label, 128), (PHOTO_LOW_RES.label, 96), (PHOTO_LOW_RES.label, 64)]
    assert (plan.size, plan.model) == (64, PHOTO_LOW_RES) and "64 tokens at 64 px" in plan.describe()
    assert "the budget fits under 8 epochs at the larger sizes" in plan.describe()
    timed = []
    plan, _ = autoplan.plan_run(PHOTOS, timer(FAST), epochs=5)  # fixed epochs: only the chosen model, for its speed
    assert timed == [(PHOTO_HYBRID.label, 128)] and "1250 training images/s" in plan.describe()


def test_a_budget_too_short_for_the_hybrid_keeps_the_lighter_stem_and_times_nothing_slower():
    timed = []

    def time_pairs(pairs):
        timed.extend((model.label, size) for model, size in pairs)
        return {(model.label, size): FAST[(model.label, size)] * 28 for model, size in pairs}

    plan, _ = autoplan.plan_run(PHOTOS, time_pairs, budget_min=30)  # conv4 stem: ~12 epochs, the hybrid ~7.4
    assert timed == [(PHOTO_SMALL.label, 128), (PHOTO_HYBRID.label, 128)]
    assert (plan.size, plan.model, plan.epochs) == (128, PHOTO_SMALL, 11)
    assert plan.recipe()["optim"]["lr"] == PHOTO_SMALL.lr == 1e-3


def test_every_choice_has_a_reason_and_a_given_flag_is_named():
    plan = make_plan(PHOTOS, FAST, epochs=5)
    text = plan.describe({"data.img_size"})
    for what in ("resolution", "model", "length", "batch", "augmentation", "schedule"):
        assert f"  {what}:" in text
    assert text.count("because") == len(plan.choices)
    assert "replaced by the flag(s) for data.img_size" in text


def test_candidates_are_timed_with_the_optimizer_the_plan_trains_with(tmp_path, monkeypatch):
    from vitkit.training import optim

    built = []
    real_build = optim.build_optimizer

    def recording_build(model, objective, config, precision="fp32"):
        built.append(config)
        return real_build(model, objective, config, precision)

    monkeypatch.setattr(optim, "build_optimizer", recording_build)
    monkeypatch.setattr(autoplan, "timing_cache_path", lambda: tmp_path / "timings.json")
    tiny = autoplan.narrow_vit("C20", 4, 1, "tiny hybrid", width=64, muon_convs=True)
    seconds = autoplan.time_candidates([(tiny, 16)], classes=3, precision="fp32", steps=1, batch=2)
    assert seconds[("tiny hybrid", 16)] > 0
    assert [(c.optimizer, c.muon_convs) for c in built] == [("muon", True)]
    autoplan.time_candidates([(tiny, 16)], classes=3, precision="fp32", steps=1, batch=2)
    assert len(built) == 1  # the second plan reads the cache


def test_stats_come_from_headers_of_a_sample(tmp_path):
    stats = read_stats(str(folder(tmp_path / "photos", 3, 5, (300, 220))))
    assert stats == DatasetStats(train_images=14, val_images=1, classes=3, short_side=220) or (
        stats.classes == 3 and stats.short_side == 220 and stats.train_images + stats.val_images == 15
    )


def test_stats_count_what_training_loads_under_the_size_flags(tmp_path):
    from vitkit.data import DataConfig, load_dataset

    photos = folder(tmp_path / "photos", 3, 12, (64, 48))  # one folder: split by val_fraction
    split = tmp_path / "split"
    folder(split / "train", 2, 8, (40, 40)), folder(split / "val", 2, 6, (40, 40))
    cases = [(photos, {}, (33, 3)), (photos, {"limit_per_class": 5}, (12, 3)), (split, {"limit_per_class": 4}, (8, 8)),
             (photos, {"val_fraction": 0.25, "train_fraction": 0.5}, (12, 9))]  # fmt: skip
    for root, knobs, expected in cases:
        stats = read_stats(str(root), **knobs)
        loaded = load_dataset(DataConfig(path=str(root), img_size=32, **knobs))
        assert (stats.train_images, stats.val_images) == expected == (len(loaded.train), len(loaded.val)), knobs


@pytest.fixture
def fake_timings(monkeypatch):
    """The candidates' speed without timing them (the CLI's timing is exercised by the small-image test)."""
    monkeypatch.setattr(autoplan, "time_candidates", lambda pairs, *args, **kwargs: dict(FAST))


def test_train_with_only_data_plans_prints_reasons_and_writes_the_recipe(tmp_path, capsys):
    data = folder(tmp_path / "tiny", 4, 10, (32, 32))
    out = tmp_path / "run"
    small = ["--hidden-dim", "32", "--depth", "1", "--num-heads", "1", "--mlp-dim", "32"]  # model fields, not --model
    code = main(["train", "--data", str(data), "--epochs", "1", *small, "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "planned for" in printed and "because" in printed
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["data"]["img_size"] == 32 and written["model"]["name"] == SMALL_IMAGES.name
    assert written["run"]["epochs"] == 1 and written["model"]["depth"] == 1 and written["model"]["pool"] == "gap"


def test_a_flag_given_wins_over_the_plan(tmp_path, capsys, fake_timings):
    data = folder(tmp_path / "photos", 3, 12, (300, 240))
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--epochs", "1", "--img-size", "64", "--batch-size", "4",
            "--randaugment-n", "1", "--depth", "1", "--hidden-dim", "32", "--num-heads", "1", "--mlp-dim", "32",
            "--limit-per-class", "10", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "(27 training / 3 validation images" in printed  # planned for the 10 a class that are trained on
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["data"]["img_size"] == 64 and written["run"]["batch_size"] == 4
    assert written["augment"]["randaugment_n"] == 1 and written["augment"]["crop"] == "rrc"
    assert "replaced by the flag(s) for data.img_size" in printed


def test_a_recipe_or_a_model_turns_the_plan_off(tmp_path, capsys):
    data = folder(tmp_path / "tiny", 2, 10, (32, 32))
    argv = ["train", "--data", str(data), "--model", "mu/4", "--img-size", "8", "--hidden-dim", "16", "--depth", "1",
            "--num-heads", "2", "--mlp-dim", "16", "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "run"),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "planned for" not in capsys.readouterr().out


def test_digits_and_no_data_stay_the_embedded_recipe(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(autoplan, "plan_run", lambda *args, **kwargs: pytest.fail("planned for digits"))
    argv = ["train", "--data", "digits", "--limit-per-class", "5", "--epochs", "1", "--batch-size", "8",
            "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "planned for" not in capsys.readouterr().out
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["model"]["name"] == "Mini/4" and written["data"]["img_size"] == 16  # the embedded digits recipe
