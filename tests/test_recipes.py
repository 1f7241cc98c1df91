"""Recipes inherit: `base: OTHER.yaml` and only what differs; chains, cycles, missing bases; recipes/ as resolved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitkit.training.config import TrainConfig, load_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RESOLVED = Path(__file__).with_name("recipes_resolved.json")  # regenerate: PYTHONPATH=src python tests/test_recipes.py


def resolved(path: Path) -> dict:
    """The recipe as a run writes it to config.yaml, through JSON (tuples become lists)."""
    return json.loads(json.dumps(load_config(path).to_dict()))


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_every_recipe_resolves_to_its_recorded_config(name: str) -> None:
    expected = json.loads(RESOLVED.read_text())
    assert name in expected, f"new recipe {name}: record it with `python tests/test_recipes.py`"
    # Keys recorded then must resolve to the same values (fields added to the config since are not recorded).
    now = within(resolved(RECIPES / name), expected[name])
    assert now == expected[name], "a recipe changed: if on purpose, `python tests/test_recipes.py`"


def within(values: dict, recorded: dict) -> dict:
    """`values` restricted to the keys of `recorded`, recursively (a recorded key missing from `values` stays out)."""
    return {
        key: within(values[key], sub) if isinstance(sub, dict) and isinstance(values[key], dict) else values[key]
        for key, sub in recorded.items()
        if key in values
    }


def test_derived_recipes_state_only_their_differences() -> None:
    reg = (RECIPES / "cifar10_60min_reg.yaml").read_text()
    assert "base: cifar10_60min.yaml" in reg and "hidden_dim" not in reg
    base = load_config(RECIPES / "cifar10_60min.yaml")
    derived = load_config(RECIPES / "cifar10_60min_reg.yaml")
    expected = base.replace({"model.drop_path": 0.1, "augment.randaugment_n": 1, "augment.randaugment_m": 9})
    assert derived == expected


def test_a_recipe_applies_its_chain_of_bases_section_by_section(tmp_path: Path) -> None:
    write(tmp_path, "root.yaml", "model:\n  name: Ti/4\n  depth: 2\n  pool: gap\nrun:\n  epochs: 5\n  seed: 3\n")
    write(tmp_path, "mid/mid.yaml", "base: ../root.yaml\nmodel:\n  depth: 3\nrun:\n  epochs: 7\n")
    leaf = write(tmp_path, "mid/leaf.yaml", "base: mid.yaml\noptim:\n  lr: 0.01\n")
    config = load_config(leaf)
    assert config.model.name == "Ti/4" and config.model.overrides == {"depth": 3, "pool": "gap"}
    assert (config.run.epochs, config.run.seed, config.optim.lr) == (7, 3, 0.01)
    # What the run writes is the resolved recipe: no base, and it reads back to the same config.
    written = write(tmp_path, "run/config.yaml", config.to_yaml())
    assert "base" not in config.to_dict() and load_config(written) == config
    # A model name fixes the architecture, as --model does: the base's model fields do not follow it.
    renamed = write(tmp_path, "renamed.yaml", "base: root.yaml\nmodel:\n  name: resnet20\n")
    assert load_config(renamed).model.overrides == {} and load_config(renamed).run.epochs == 5
    assert load_config(leaf, {"run.epochs": 9}).run.epochs == 9  # flags still come last


def test_bad_bases_are_named(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ValueError, match=r"bases form a cycle \(.*a\.yaml -> .*b\.yaml -> .*a\.yaml\)"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ValueError, match="cycle"):
        load_config(write(tmp_path, "self.yaml", "base: ./self.yaml\n"))
    with pytest.raises(FileNotFoundError, match=r"names base 'gone\.yaml', but .*gone\.yaml does not exist"):
        load_config(write(tmp_path, "orphan.yaml", "base: gone.yaml\n"))
    with pytest.raises(ValueError, match=r"base must be the path of another recipe .*got \['x'\]"):
        load_config(write(tmp_path, "list.yaml", "base: [x]\n"))
    with pytest.raises(ValueError, match=r"unknown section 'base'"):
        TrainConfig.from_dict({"base": "x.yaml"})  # a base is a file's: resolved by load_config


if __name__ == "__main__":  # record the resolved recipes after an intended change
    RESOLVED.write_text(
        json.dumps({p.name: resolved(p) for p in sorted(RECIPES.glob("*.yaml"))}, indent=1, sort_keys=True) + "\n"
    )
