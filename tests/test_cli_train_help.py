"""`vitkit train|finetune|pretrain --help`: the knobs most people touch first, grouped, then the rest by section."""

from __future__ import annotations

import argparse

import pytest

from vitkit.cli import finetune as finetune_cli
from vitkit.cli import pretrain as pretrain_cli
from vitkit.cli import train as train_cli

FIRST_GROUPS = ["model", "data", "augmentation", "optimisation", "run", "runtime"]


def groups_of(module) -> dict[str, list[str]]:
    """Each argument group's title (less its recipe section) and its flags, in the order --help prints them."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return {
        group.title.split(" (recipe section")[0]: [action.option_strings[0] for action in group._group_actions]
        for group in parser._action_groups
        if group._group_actions and "recipe section" in (group.title or "")
    }


def test_every_first_knob_is_a_recipe_knob() -> None:
    keys = {knob.key for knob in train_cli.config_fields()}
    named = {f"{section}.{name}" for section, (_, names) in train_cli.FIRST_KNOBS.items() for name in names}
    assert named <= keys, sorted(named - keys)


@pytest.mark.parametrize("module", [train_cli, finetune_cli, pretrain_cli], ids=["train", "finetune", "pretrain"])
def test_help_shows_the_first_knobs_grouped_then_the_rest(module) -> None:
    groups = groups_of(module)
    titles = list(groups)
    assert titles[: len(FIRST_GROUPS)] == FIRST_GROUPS
    assert all(t.startswith("more ") or t == "objective" for t in titles[len(FIRST_GROUPS) :])
    flags = [flag for group in groups.values() for flag in group]
    assert len(flags) == len(set(flags))  # each knob once
    assert {"--lr", "--epochs", "--batch-size", "--precision", "--crop", "--data"} <= set(
        flags[: flags.index("--distributed") + 1]
    )
    assert "--betas" in groups["more optimisation options"] and "--teacher" in groups["objective"]


def test_train_help_starts_with_the_model_and_its_size() -> None:
    groups = groups_of(train_cli)
    assert groups["model"][:3] == ["--model", "--pretrained", "--new-head"]
    assert groups["optimisation"][:3] == ["--optimizer", "--lr", "--weight-decay"]
