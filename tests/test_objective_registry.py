"""Objectives: an explicit registry (name -> "module:Class"), a recipe naming its own "package.module:Class", and
settings sections that belong to their objective."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from vitkit.cli.main import main
from vitkit.training import OBJECTIVES, Supervised, load_config, register_objective
from vitkit.training.objective_registry import SETTINGS, objective_class, objective_section

MODULE = '''
"""An objective of a user's own: cross-entropy times a factor, with its own settings section."""

from dataclasses import dataclass

import torch.nn.functional as F

from vitkit.configs import knob
from vitkit.errors import UsageError
from vitkit.inference import evaluate
from vitkit.training import Objective, ObjectiveSettings, StepOutput, Validation


@dataclass
class ScaledSettings(ObjectiveSettings):
    scale: float = knob(1.0, "multiply the cross-entropy by this")

    def __post_init__(self):
        if self.scale <= 0:
            raise UsageError(f"objective.scaled.scale must be positive, got {self.scale}")


class Scaled(Objective):
    name = "scaled"
    Settings = ScaledSettings
    train_metrics = ("loss", "acc")  # the progress line shows acc (vitkit.training.progress)
    val_metrics = ("top1", "loss")
    built = []

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    @classmethod
    def build(cls, settings, context):
        cls.built.append((settings.scale, context.num_classes))
        return cls(settings.scale)

    def forward(self, model, batch):
        logits = model(batch.images).float()
        loss = F.cross_entropy(logits, batch.targets) * self.scale
        acc = (logits.argmax(1) == batch.targets.argmax(1)).float().mean() * 100
        return StepOutput(loss, {"loss": loss.detach(), "acc": acc})

    def validate(self, model, context):
        result = evaluate(model, context.source, context.transform, batch_size=context.batch_size,
                          device=context.device, precision=context.precision)
        return Validation({"top1": result.top1, "loss": result.loss}, result.images)
'''
TINY = [
    "--limit-per-class", "6", "--img-size", "16", "--hidden-dim", "32", "--depth", "1", "--num-heads", "2",
    "--mlp-dim", "64", "--batch-size", "12", "--epochs", "1", "--threads", "1", "--precision", "fp32", "--no-progress",
]  # fmt: skip


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module outside vitkit, importable from tmp_path."""
    (tmp_path / "user_objective_module.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_objective_module"


def test_an_objective_in_its_own_module_trains_from_a_recipe(tmp_path: Path, user_module: str) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"objective:\n  name: {user_module}:Scaled\n  scaled:\n    scale: 2.5\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), *TINY, "--out", str(out)]) == 0
    cls = objective_class(f"{user_module}:Scaled")
    assert cls.built == [(2.5, 10)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["objective"] == "scaled" and "val_top1" in summary
    config = load_config(out / "config.yaml")  # the run's own record names the module again
    assert config.objective.name == f"{user_module}:Scaled" and config.objective.settings.scale == 2.5
    assert "user_objective_module" not in OBJECTIVES  # nothing in vitkit was edited or registered


def test_the_objectives_own_dataclass_checks_its_section(tmp_path: Path, user_module: str) -> None:
    with pytest.raises(ValueError, match=r"objective.scaled.scale must be positive, got -1"):
        load_config(None, {"objective.name": f"{user_module}:Scaled", "objective.scaled.scale": -1})
    with pytest.raises(ValueError, match=r"unknown key objective.scaled.factor; valid keys of 'objective.scaled'"):
        load_config(None, {"objective.name": f"{user_module}:Scaled", "objective.scaled.factor": 2})


def test_unknown_objectives_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"objective.name must be one of \['distill', 'mpp', 'supervised'\] or a"):
        load_config(None, {"objective.name": "contrastive"})
    with pytest.raises(ValueError, match=r"no module 'no_such_module' on the Python path"):
        load_config(None, {"objective.name": "no_such_module:Thing"})
    with pytest.raises(ValueError, match=r"vitkit.training.objectives:Batch is not an Objective subclass"):
        load_config(None, {"objective.name": "vitkit.training.objectives:Batch"})
    # A module that exists but whose own import fails is a bug: its ModuleNotFoundError is not a user error.
    (tmp_path / "broken_objective_module.py").write_text("import a_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_missing"):
        load_config(None, {"objective.name": "broken_objective_module:X"})


def test_registered_objectives_are_imported_only_when_named() -> None:
    assert OBJECTIVES["mpp"] == "vitkit.training.mpp:MaskedPatchPrediction"
    assert objective_class("supervised") is Supervised


def test_the_built_in_settings_are_their_objectives_own() -> None:
    """`SETTINGS` answers for vitkit's objectives without importing their torch modules: it must name the very
    `Settings` of each class, whose section is its name."""
    assert set(SETTINGS) == set(OBJECTIVES)
    for name in OBJECTIVES:
        cls = objective_class(name)
        assert cls.name == name and objective_section(name) == (cls.name, cls.Settings)


def test_a_registered_objective_brings_its_own_settings(user_module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(OBJECTIVES, "scaled", "placeholder:Undone")  # the entry goes again after the test
    register_objective("scaled", f"{user_module}:Scaled")
    config = load_config(None, {"objective.name": "scaled", "objective.scaled.scale": 3})
    assert config.objective.settings.scale == 3.0 and objective_section("scaled")[1].__name__ == "ScaledSettings"
