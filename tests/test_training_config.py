"""Training configuration: recipes, flags, validation messages, the learning-rate schedule, decay groups."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch

from vitkit import configs, create_model
from vitkit.cli import train as train_cli
from vitkit.models import ViTConfig
from vitkit.training.config import ModelConfig, OptimConfig, TrainConfig, load_config
from vitkit.training.optim import build_optimizer, learning_rate, parameter_groups, warmup_steps

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_default_config_is_the_digits_recipe() -> None:
    assert load_config(RECIPES / "digits.yaml") == TrainConfig()


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_every_recipe_loads(name: str) -> None:
    load_config(RECIPES / name)


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = load_config(overrides={"optim.lr": 0.01, "data.mean": (0.1, 0.2, 0.3), "runtime.compile": True})
    assert load_config(write(tmp_path, config.to_yaml())) == config


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown key optim\.lrr.*valid keys of 'optim': optimizer, lr"):
        load_config(write(tmp_path, "optim:\n  lrr: 0.1\n"))


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown section 'optimizer'; valid sections: model, data, augment"):
        load_config(write(tmp_path, "optimizer:\n  lr: 0.1\n"))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"optim\.lr must be a number, got 'fast'"):
        load_config(write(tmp_path, "optim:\n  lr: fast\n"))
    with pytest.raises(ValueError, match=r"data\.mean must be a list of values \(\[float, \.\.\.\]\), got 'grey'"):
        load_config(write(tmp_path, "data:\n  mean: grey\n"))
    with pytest.raises(ValueError, match=r"mean and std need one value per image channel each"):
        load_config(write(tmp_path, "data:\n  mean: [0.5, 0.5]\n"))
    with pytest.raises(ValueError, match=r"augment\.hflip must be true or false"):
        load_config(write(tmp_path, "augment:\n  hflip: 3\n"))


def test_bad_values_say_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"runtime\.precision must be one of .*'fp8'"):
        load_config(write(tmp_path, "runtime:\n  precision: fp8\n"))
    with pytest.raises(ValueError, match=r"unknown key run\.threads \(it moved to the runtime section\)"):
        load_config(write(tmp_path, "run:\n  threads: 2\n"))
    with pytest.raises(ValueError, match=r"batch_size 10 is not divisible by run\.grad_accum 3"):
        load_config(overrides={"run.batch_size": 10, "run.grad_accum": 3})
    with pytest.raises(ValueError, match=r"optim\.optimizer must be one of \('adamw', 'sgd', 'muon', 'ranger'\)"):
        load_config(overrides={"optim.optimizer": "lamb"})
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\)"):
        load_config(overrides={"data.val_fraction": 1.5})


def test_invalid_yaml_and_missing_file_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(write(tmp_path, "optim: [lr: 1\n"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_model_name_resets_the_architecture(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "model:\n  name: Ti/4\n  depth: 6\n"))
    assert config.model == ModelConfig(name="Ti/4", overrides={"depth": 6})
    assert load_config(overrides={"optim.lr": 0.1}).model == TrainConfig().model  # other keys keep the default model
    assert load_config(overrides={"model.depth": 2}).model.overrides["hidden_dim"] == 96  # a field keeps the rest


def test_model_fields_are_checked_against_the_model_config(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown model field 'depht' for Ti/4 \(a ViT\); valid fields: name, pretrained, new_head, .*depth",
    ):
        load_config(write(tmp_path, "model:\n  name: Ti/4\n  depht: 6\n"))
    with pytest.raises(ValueError, match=r"model\.depth must be an integer, got 'six'"):
        load_config(write(tmp_path, "model:\n  depth: six\n"))
    config = load_config(write(tmp_path, "model:\n  name: S/16\n  drop_path: 0.1\n  pool: gap\n"))
    assert config.to_dict()["model"] == {
        "name": "S/16",
        "pretrained": None,
        "new_head": False,
        "drop_path": 0.1,
        "pool": "gap",
    }


def test_model_fields_are_those_of_the_family_named(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "model:\n  name: resnet20\n  shortcut: B\n  width: 8\n"))
    assert config.model.overrides == {"shortcut": "B", "width": 8}
    model = create_model(config.model.name, num_classes=10, img_size=16, **config.model.overrides)
    assert (model.config.shortcut, model.config.width, model.config.layers) == ("B", 8, (3, 3, 3))
    assert load_config(write(tmp_path, "model:\n  name: vgg8\n  stem_width: 12\n")).model.overrides["stem_width"] == 12
    resnet = (
        r"unknown model field 'pool' for resnet20 \(a CIFAR ResNet\); valid fields: name, pretrained, new_head, layers"
    )
    with pytest.raises(ValueError, match=resnet):
        load_config(write(tmp_path, "model:\n  name: resnet20\n  pool: gap\n"))
    with pytest.raises(ValueError, match=r"model\.shortcut must be a string, got 2"):
        load_config(write(tmp_path, "model:\n  name: resnet20\n  shortcut: 2\n"))
    with pytest.raises(ValueError, match=r"unknown model field 'shortcut' for Ti/4 \(a ViT\)"):
        load_config(write(tmp_path, "model:\n  name: Ti/4\n  shortcut: B\n"))
    with pytest.raises(ValueError, match=r"unknown model 'nope/4'"):
        load_config(write(tmp_path, "model:\n  name: nope/4\n  depth: 2\n"))
    # A checkpoint decides the family: a name that only labels the run allows every family's fields.
    labelled = load_config(write(tmp_path, "model:\n  name: my-run\n  pretrained: ckpt\n  shortcut: B\n"))
    assert labelled.model.overrides == {"shortcut": "B"}


def test_model_configs_refuse_unknown_fields_naming_the_family() -> None:
    with pytest.raises(
        ValueError, match=r"unknown CIFAR ResNet config field\(s\) \['pool'\]; valid fields: \['layers'"
    ):
        create_model("resnet20", pool="gap")
    with pytest.raises(ValueError, match=r"unknown ViT config field\(s\) \['shortcut'\]"):
        create_model("Ti/4", shortcut="B")
    with pytest.raises(ValueError, match=r"unknown ViT config field\(s\) \['depht'\]"):
        configs.replace(ViTConfig(), depht=2)


def test_flags_override_the_recipe(tmp_path: Path) -> None:
    recipe = write(tmp_path, "optim:\n  lr: 0.5\n  weight_decay: 0.2\nrun:\n  epochs: 3\n")
    args = parse(["--config", str(recipe), "--lr", "0.01", "--no-hflip", "--mean", "0.1", "0.2", "0.3",
                  "--warmup-steps", "none", "--seed", "7", "--split-seed", "3"])  # fmt: skip
    config = load_config(args.config, train_cli.overrides_from(args))
    assert config.optim.lr == 0.01 and config.optim.weight_decay == 0.2 and config.run.epochs == 3
    assert config.augment.hflip is False and config.data.mean == (0.1, 0.2, 0.3)
    assert config.optim.warmup_steps is None and config.run.seed == 7 and config.data.seed == 3


def test_every_knob_has_a_flag_with_help() -> None:
    fields = train_cli.config_fields()
    flags = [knob.flag for knob in fields]
    assert len(set(flags)) == len(flags)
    assert not [knob.key for knob in fields if not knob.help or knob.help == knob.key]
    documented = ["--model", "--data", "--lr", "--seed", "--split-seed", "--objective", "--teacher", "--distill"]
    documented += ["--distill-alpha", "--distill-tau", "--mpp-target", "--mpp-corrupt", "--depth", "--pretrained"]
    assert set(documented) <= set(flags)
    args = parse(["--model", "Ti/4", "--depth", "6", "--threads", "2", "--precision", "fp32"])
    config = load_config(None, train_cli.overrides_from(args))
    assert config.model.overrides == {"depth": 6} and config.runtime.threads == 2
    assert config.runtime.precision == "fp32"


def test_schedule_warms_up_then_decays() -> None:
    config = OptimConfig(lr=1.0, min_lr=0.0, warmup_steps=10)
    warmup = warmup_steps(config, steps_per_epoch=100)
    rates = [learning_rate(step, config, warmup, 110) for step in range(110)]
    assert rates[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert rates[10] == pytest.approx(1.0)
    assert rates[60] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))
    linear = OptimConfig(lr=1.0, min_lr=0.1, schedule="linear", warmup_epochs=0.0)
    assert learning_rate(50, linear, 0, 100) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_steps(OptimConfig(warmup_epochs=1.5), steps_per_epoch=10) == 15


def test_flat_cos_holds_the_peak_then_follows_a_cosine() -> None:
    config = OptimConfig(lr=1.0, min_lr=0.0, schedule="flat_cos", flat_fraction=0.75, warmup_steps=10)
    rates = [learning_rate(step, config, 10, 110) for step in range(110)]
    assert rates[10:85] == pytest.approx([1.0] * 75)
    assert rates[85 + 12] == pytest.approx(0.5 * (1 + math.cos(math.pi * 12 / 25)))
    assert all(a > b for a, b in zip(rates[85:], rates[86:], strict=False)) and rates[-1] < 0.01
    with pytest.raises(ValueError, match="flat_fraction"):
        OptimConfig(flat_fraction=1.0)


def test_no_weight_decay_on_biases_norms_and_embeddings() -> None:
    from vitkit import create_model

    model = create_model("mu/4", num_classes=3, img_size=16, depth=1, posemb="learned")
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "pos_embed.weight", "norm.weight", "head.bias"} <= skipped
    assert all(names[id(p)].endswith("weight") and p.ndim > 1 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert isinstance(build_optimizer(model, None, OptimConfig(optimizer="sgd")), torch.optim.SGD)


# The objective section as every run directory's config.yaml wrote it before each objective had its own section.
OLD_OBJECTIVE = """objective:
  name: {name}
  mpp_target: {target}
  mpp_corrupt: 0.5
  teacher: {teacher}
  distill: {kind}
  distill_alpha: 0.5
  distill_tau: 1.0
"""


def test_old_run_config_objective_keys_translate(tmp_path: Path) -> None:
    old = write(tmp_path, OLD_OBJECTIVE.format(name="supervised", target="mean3bit", teacher="null", kind="null"))
    assert load_config(old) == TrainConfig()  # only defaults of other objectives: nothing kept
    old = write(tmp_path, OLD_OBJECTIVE.format(name="mpp", target="4x4", teacher="null", kind="null"))
    assert load_config(old).to_dict()["objective"] == {"name": "mpp", "mpp": {"target": "4x4", "corrupt": 0.5}}
    distill = OLD_OBJECTIVE.format(name="distill", target="mean3bit", teacher="runs/t", kind="soft")
    old = write(tmp_path, "model:\n  pool: token\n" + distill)  # a distillation token needs a class token
    section = load_config(old).to_dict()["objective"]
    assert section["name"] == "distill" and set(section) == {"name", "distill"}
    assert section["distill"] == {"teacher": "runs/t", "kind": "soft", "alpha": 0.5, "tau": 1.0, "token": "dist"}


def test_resume_of_a_run_with_the_old_objective_keys(tmp_path: Path) -> None:
    from vitkit.training import train

    tiny = {
        "data.limit_per_class": 4, "data.img_size": 16, "model.depth": 1, "model.hidden_dim": 32,
        "model.num_heads": 2, "model.mlp_dim": 64, "run.batch_size": 10, "run.epochs": 2,
        "runtime.threads": 1, "runtime.precision": "fp32", "optim.warmup_steps": 1,
    }  # fmt: skip
    run = tmp_path / "run"
    train(load_config(None, {**tiny, "run.steps": 3}), run)
    # As an old vitkit wrote it: the flat objective section.
    text = (run / "config.yaml").read_text()
    head, _, rest = text.partition("objective:\n")
    body = rest.split("runtime:", 1)[1]
    old = OLD_OBJECTIVE.format(name="supervised", target="mean3bit", teacher="null", kind="null")
    (run / "config.yaml").write_text(head + old + "runtime:" + body)
    summary = train(None, run, resume=True)
    assert summary["steps"] == 3 and summary["objective"] == "supervised" and summary["status"] == "finished"


def test_a_model_name_warns_of_the_recipe_fields_it_drops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recipe = write(tmp_path, "model:\n  name: Ti/4\n  pool: gap\n  drop_path: 0.1\n  depth: 6\n")
    with caplog.at_level("WARNING", logger="vitkit.training"):
        config = load_config(recipe, {"model.name": "S/4", "model.depth": 8})
    assert config.model == ModelConfig(name="S/4", overrides={"depth": 8})
    (message,) = [record.getMessage() for record in caplog.records]
    assert message.startswith("command line: model 'S/4' resets the model fields")
    assert "dropped: pool=gap, drop_path=0.1." in message and "depth" not in message.split("dropped:")[1]

    caplog.clear()
    base = write(tmp_path, "model:\n  name: Ti/4\n  posemb: sincos_2d\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {base.name}\nmodel:\n  name: S/4\n")
    with caplog.at_level("WARNING", logger="vitkit.training"):
        assert load_config(child).model.overrides == {}
    assert "child.yaml: model 'S/4' resets" in caplog.text and "posemb=sincos_2d" in caplog.text


def test_a_model_name_replacing_the_default_or_restating_every_field_is_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recipe = write(tmp_path, "model:\n  name: Ti/4\n  pool: gap\n")
    with caplog.at_level("WARNING", logger="vitkit.training"):
        load_config(overrides={"model.name": "S/4"})  # the embedded default's fields are not a recipe's choice
        load_config(recipe, {"model.name": "S/4", "model.pool": "gap"})
        load_config(recipe, {"model.depth": 2})  # a field alone keeps the rest
    assert caplog.records == []
