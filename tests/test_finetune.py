"""Fine-tuning (paper Sec. 3.2): any checkpoint format, new resolution and classes, the recipe, its options."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vitkit
from test_interop_formats import random_vit, to_jax, to_timm
from vitkit.cli.main import main
from vitkit.models.posemb import resample_posemb
from vitkit.training import load_config, train
from vitkit.training.config import OptimConfig, TrainConfig
from vitkit.training.finetune import FINETUNE, finetune_config, finetune_defaults
from vitkit.training.metrics import read_metrics
from vitkit.training.optim import build_optimizer, freeze, frozen_to_eval, parameter_groups, set_learning_rate
from vitkit.training.trainer import create_trainer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# Digits at 48 px (the checkpoints are 32 px: E_pos goes from a 4x4 to a 6x6 grid), 5 per class, 2 steps/epoch.
QUICK = {
    "data.limit_per_class": 5, "run.batch_size": 20, "run.steps": 3, "optim.warmup_steps": 1, "runtime.threads": 1,
    "runtime.precision": "fp32", "run.log_every": 1,
}  # fmt: skip
BODY_SKIP = ("head.", "head_dist.", "pre_logits.", "pos_embed.")


def write_checkpoint(fmt: str, folder: Path) -> tuple[Path, dict]:
    """A random 32-px checkpoint with a pre-training head (and pre-logits layer) in format `fmt`; its load flags."""
    if fmt == "hf":
        transformers = pytest.importorskip("transformers")
        from test_hf_parity import randomize_

        hf_config = transformers.ViTConfig(
            image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128,
        )  # fmt: skip
        randomize_(transformers.ViTModel(hf_config), 3).save_pretrained(folder / "hf")  # pooler: Dense + tanh
        return folder / "hf", {}
    model = random_vit(representation_size=48, num_classes=7, num_heads=2 if fmt == "jax" else 4)
    if fmt == "timm":
        save_file(to_timm(model), folder / "vit.safetensors")
        return folder / "vit.safetensors", {"num_heads": 4}  # a width timm does not release
    if fmt == "jax":
        np.savez(folder / "vit.npz", **to_jax(model))
        return folder / "vit.npz", {}
    # 10 classes, as many as digits: the head is new all the same.
    model = random_vit(representation_size=48, num_classes=10)
    metadata = {"data": {"img_size": 32, "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}}
    vitkit.save(model, folder / "native", metadata=metadata)
    return folder / "native", {}


@pytest.mark.parametrize("fmt", ["vitkit", "timm", "jax", "hf"])
def test_finetune_from_every_format_starts_from_the_checkpoint(tmp_path, fmt):
    path, load_flags = write_checkpoint(fmt, tmp_path)
    overrides = {**QUICK, **{f"model.{k}": v for k, v in load_flags.items()}}
    config = finetune_config(path, "digits", 48, overrides)
    assert config.model.new_head and config.model.pretrained == str(path)
    trainer = create_trainer(config, tmp_path / "unused")
    model, reference = trainer.learner.model, vitkit.load(path, **load_flags)
    # Step 0: a zero D x K head for the 10 digits, no pre-logits layer, the body as in the checkpoint.
    assert model.config.num_classes == 10 and model.config.representation_size is None and model.pre_logits is None
    assert model.head.weight.shape == (10, 64) and not model.head.weight.any() and not model.head.bias.any()
    want = reference.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith(BODY_SKIP):
            assert torch.equal(value, want[key]), key
    resampled = resample_posemb(want["pos_embed.weight"], (6, 6), (4, 4), reference.config.num_prefix_tokens)
    assert torch.equal(model.pos_embed.weight, resampled)
    # The paper's optimizer: SGD, momentum 0.9, no weight decay.
    assert isinstance(trainer.learner.optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 0.0 for g in trainer.learner.optimizer.param_groups)
    trainer.runtime.close()
    summary = train(config, tmp_path / "run")
    assert summary["steps"] == 3 and summary["epochs"] == 2  # 2 steps per epoch: the second epoch stops at 3
    if fmt == "vitkit":  # a vitkit checkpoint's recorded normalisation is kept
        assert config.data.mean == (0.4, 0.4, 0.4) and config.data.std == (0.2, 0.2, 0.2)


def test_finetuned_checkpoint_evaluates_with_no_flags(tmp_path, capsys):
    path, _ = write_checkpoint("vitkit", tmp_path)
    flags = ["--limit-per-class", "5", "--batch-size", "20", "--steps", "2", "--threads", "1", "--no-progress"]
    out = tmp_path / "run"
    assert main(["finetune", str(path), "--data", "digits", "--img-size", "24", *flags, "--out", str(out)]) == 0
    written = load_config(tmp_path / "run" / "config.yaml")
    assert written.optim.optimizer == "sgd" and written.run.steps == 2 and written.data.img_size == 24
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["preprocessing"]["img_size"] == 24 and result["preprocessing"]["mean"] == [0.4, 0.4, 0.4]
    assert len(result["per_class"]) == 10


def test_no_new_head_keeps_the_trained_head_at_a_new_resolution(tmp_path):
    path, _ = write_checkpoint("vitkit", tmp_path)  # 10 classes, as many as digits
    flags = ["--limit-per-class", "5", "--batch-size", "20", "--steps", "1", "--threads", "1", "--lr", "1e-12"]
    out = tmp_path / "run"
    args = ["finetune", str(path), "--data", "digits", "--img-size", "48", "--no-new-head", *flags, "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    assert load_config(out / "config.yaml").model.new_head is False
    tuned, reference = vitkit.load(out / "checkpoints" / "last"), vitkit.load(path)
    assert tuned.config.representation_size == 48  # the pre-logits layer stays with the head
    torch.testing.assert_close(tuned.head.weight, reference.head.weight)  # lr 1e-12: one step changes nothing
    assert tuned.head.weight.any()


def test_finetune_needs_data(tmp_path, capsys):
    path, _ = write_checkpoint("vitkit", tmp_path)
    assert main(["finetune", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "vitkit finetune needs --data PATH" in capsys.readouterr().err


def test_recipe_file_is_the_function(tmp_path):
    recipe, defaults = load_config(RECIPES / "finetune.yaml"), finetune_defaults()
    for section in ("augment", "optim", "run"):
        assert getattr(recipe, section) == getattr(defaults, section), section
    assert recipe.model.new_head and FINETUNE["optim"]["clip_grad"] == 1.0 and recipe.run.batch_size == 512
    assert recipe.optim.schedule == "cosine" and recipe.optim.min_lr == 0.0


def tiny_model(depth: int = 2) -> vitkit.models.VisionTransformer:
    """A 16 px ViT with `depth` blocks."""
    return vitkit.create_model("mu/4", img_size=16, num_classes=3, hidden_dim=16, depth=depth, num_heads=2, mlp_dim=32)


def test_layer_decay_groups_scale_by_depth():
    model, extra = tiny_model(depth=2), torch.nn.Linear(4, 4)
    groups = parameter_groups(model, 0.1, extra, layer_decay=0.5)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    expected = {"patch_embed.proj.weight": 0.125, "pos_embed.weight": 0.125, "blocks.0.attn.qkv.weight": 0.25,
                "blocks.1.mlp.fc2.bias": 0.5, "norm.weight": 1.0, "head.weight": 1.0}  # fmt: skip
    params = dict(model.named_parameters())
    for name, scale in expected.items():
        assert scale_of[id(params[name])] == scale, name
    assert decay_of[id(params["blocks.0.attn.qkv.weight"])] == 0.1 and decay_of[id(params["norm.weight"])] == 0.0
    assert scale_of[id(extra.weight)] == 1.0 and len(scale_of) == len(params) + 2
    optimizer = torch.optim.SGD(groups, lr=1.0)
    set_learning_rate(optimizer, 0.2)
    assert sorted({g["lr"] for g in optimizer.param_groups}) == [0.025, 0.05, 0.1, 0.2]


def test_without_layer_decay_the_groups_are_decay_then_no_decay():
    groups = parameter_groups(tiny_model(), 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and all(g["lr_scale"] == 1.0 for g in groups)


def test_layer_decay_on_a_convnet_is_refused():
    with pytest.raises(ValueError, match="optim.layer_decay needs a ViT"):
        parameter_groups(vitkit.create_model("resnet20", num_classes=3), 0.0, layer_decay=0.7)


def test_linear_probe_trains_only_the_head(tmp_path):
    model = tiny_model()
    freeze(model, OptimConfig(linear_probe=True))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    model.train()
    frozen_to_eval(model)
    assert not model.blocks.training and not model.patch_embed.training and model.head.training
    optimizer = build_optimizer(model, None, OptimConfig(linear_probe=True))
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2


def test_linear_probe_and_frozen_patch_embedding_in_a_run(tmp_path):
    path, _ = write_checkpoint("vitkit", tmp_path)
    probe = finetune_config(path, "digits", 32, {**QUICK, "optim.linear_probe": True, "optim.lr": 0.1})
    assert probe.model.overrides["drop_path"] == 0.0  # a frozen body computes fixed features
    train(probe, tmp_path / "probe")
    start, probed = vitkit.load(path), vitkit.load(tmp_path / "probe" / "checkpoints" / "last")
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in probed.state_dict().items() if "head" not in k)
    assert probed.head.weight.any()
    frozen = finetune_config(path, "digits", 32, {**QUICK, "optim.freeze_patch_embed": True, "optim.lr": 0.1})
    train(frozen, tmp_path / "frozen")
    tuned = vitkit.load(tmp_path / "frozen" / "checkpoints" / "last")
    assert torch.equal(tuned.patch_embed.proj.weight, start.patch_embed.proj.weight)
    assert not torch.equal(tuned.blocks[0].attn.qkv.weight, start.blocks[0].attn.qkv.weight)


def test_steps_stop_exactly_and_the_schedule_uses_them(tmp_path):
    overrides = {**QUICK, "run.steps": 5, "optim.warmup_steps": 1, "model.name": "mu/4", "model.hidden_dim": 16,
                 "model.depth": 1, "model.num_heads": 2, "model.mlp_dim": 32, "optim.min_lr": 0.0}  # fmt: skip
    summary = train(TrainConfig().replace(overrides), tmp_path / "run")
    assert summary["steps"] == 5 and summary["epochs"] == 3  # ceil(5 / 2 steps per epoch)
    rows = [row for row in read_metrics(tmp_path / "run" / "metrics.csv") if row["kind"] == "step"]
    rates = [float(row["lr"]) for row in rows]
    assert len(rates) == 5
    lr = TrainConfig().optim.lr
    want = [lr] + [0.5 * lr * (1 + math.cos(math.pi * (s - 1) / 4)) for s in range(1, 5)]  # decays over 5 - 1 steps
    assert rates == pytest.approx(want, rel=1e-5)  # metrics.csv keeps 6 significant digits


def test_steps_with_a_time_budget_is_refused():
    with pytest.raises(ValueError, match="run.steps cannot be combined with run.time_budget_min"):
        TrainConfig().replace({"run.steps": 10, "run.time_budget_min": 5.0})
