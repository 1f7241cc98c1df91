"""The model families' one interface (models/interface.py) and every site that uses it, for a ViT, a hybrid, a
distilled ViT and the ConvNets; the renamed Mini width and its old name; one resolve_device, one set of precisions."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import vitkit
from vitkit.analysis.fewshot import check_features
from vitkit.cli.main import main
from vitkit.inference import device as device_module
from vitkit.inference.device import INFERENCE_PRECISIONS, PRECISIONS, TRAINING_PRECISIONS, resolve_device
from vitkit.inference.evaluate import AVERAGE, head_logits
from vitkit.models import VARIANTS, AttentionShape, Model, labels_of, model_config, parse_variant
from vitkit.models import registry as registry_module
from vitkit.training import runtime as runtime_module
from vitkit.training.distill import check_student
from vitkit.training.distributed import apply_activation_checkpointing
from vitkit.training.optim import freeze, parameter_groups
from vitkit.training.preflight import check_low_res

SMALL = {"img_size": 16, "num_classes": 3, "hidden_dim": 16, "depth": 2, "num_heads": 2, "mlp_dim": 32}
VITS = {
    "vit": lambda: vitkit.create_model("Mini/4", **SMALL),
    "hybrid": lambda: vitkit.create_model("C20+Mini/4", **SMALL),
    "distilled": lambda: vitkit.create_model("Mini/4", distilled=True, **SMALL),
}
CONVNETS = {
    "resnet20": lambda: vitkit.create_model("resnet20", num_classes=3),
    "vgg8": lambda: vitkit.create_model("vgg8", num_classes=3),
    "resnetv2": lambda: vitkit.create_model("resnetv2_26x1", num_classes=3, img_size=32),
}
ALL = {**VITS, **CONVNETS}


def images(size: int = 16) -> torch.Tensor:
    """A fixed batch of two random images."""
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


# --- each family satisfies the interface ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ALL))
def test_every_family_splits_forward_into_features_and_head(kind: str) -> None:
    model = ALL[kind]().eval()
    assert isinstance(model, Model)
    x = images(16 if kind in VITS else 32)
    features = model.forward_features(x)
    logits = model(x)
    assert logits.shape == (2, 3)
    torch.testing.assert_close(model.forward_head(features), logits)
    heads = model.forward_heads(features)
    assert set(heads) == ({"cls", "dist"} if kind == "distilled" else {"cls"})
    torch.testing.assert_close(sum(heads.values()) / len(heads), logits)  # the average is what forward gives
    pre_logits = model.forward_head(features, pre_logits=True)
    assert pre_logits.ndim == 2 and pre_logits.shape[0] == 2


@pytest.mark.parametrize("kind", list(VITS))
def test_a_vit_describes_its_blocks_patches_and_attention(kind: str) -> None:
    model = VITS[kind]()
    prefix = 2 if kind == "distilled" else 1
    assert model.block_list() is model.blocks and len(model.block_list()) == 2
    assert model.patch_size == (4, 4)
    assert model.attention_shape() == AttentionShape(heads=2, tokens=16 + prefix, head_dim=8)
    assert model.has_distillation_head == (kind == "distilled")
    assert model.patch_embedding() is model.patch_embed
    embedding = {id(p) for p in model.embedding_parameters()}
    names = {name for name, p in model.named_parameters() if id(p) in embedding}
    expected = {n for n in dict(model.named_parameters()) if n.startswith(("patch_embed.", "pos_embed.", "cls_token"))}
    assert names == expected | ({"dist_token"} if kind == "distilled" else set())
    if kind == "hybrid":
        assert any(name.startswith("patch_embed.backbone.") for name in names)  # the whole stem is layer 0


@pytest.mark.parametrize("kind", list(CONVNETS))
def test_a_convnet_has_no_blocks_patches_attention_or_second_head(kind: str) -> None:
    model = CONVNETS[kind]()
    assert model.block_list() is None and model.patch_embedding() is None and model.embedding_parameters() == []
    assert model.patch_size is None and model.attention_shape() is None and not model.has_distillation_head
    assert model.no_weight_decay() == {name for name, p in model.named_parameters() if p.ndim <= 1}


def test_a_new_family_is_one_subclass() -> None:
    class Incomplete(Model):
        def forward_features(self, images: torch.Tensor) -> torch.Tensor:
            return images

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()

    class Pooled(Model):
        def __init__(self) -> None:
            super().__init__()
            self.config, self.class_names = SimpleNamespace(num_classes=2, name="pooled"), None
            self.head = nn.Linear(3, 2)

        def forward_features(self, images: torch.Tensor) -> torch.Tensor:
            return images.mean(dim=(2, 3))

        def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            return features if pre_logits else self.head(features)

        def reset_head(self) -> None:
            self.head.reset_parameters()

    model = Pooled()
    assert model(images()).shape == (2, 2) and set(model.forward_heads(model.forward_features(images()))) == {"cls"}
    groups = parameter_groups(model, 0.1)
    assert [len(g["params"]) for g in groups] == [1, 1]  # head weight decayed, its bias not
    assert labels_of(model) == (2, None)


# --- the sites, for each kind ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ALL))
def test_runtime_probes_attention_at_the_models_shape(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    timed = []
    monkeypatch.setattr(runtime_module, "time_attention", lambda kind, *shape: timed.append(shape) or 0.001)
    runtime = runtime_module.Runtime(torch.device("cpu"), "fp32", threads=1)
    runtime.choose_attention_for(ALL[kind](), batch=8)
    if kind in CONVNETS:
        assert timed == [] and runtime.attention == "auto"
    else:
        tokens = 18 if kind == "distilled" else 17
        assert timed and all(shape == (8, 2, tokens, 8, "fp32") for shape in timed)
        assert f"8x2x{tokens}x8" in runtime.attention_reason


@pytest.mark.parametrize("kind", list(VITS))
def test_layer_decay_puts_the_embeddings_first_and_each_block_next(kind: str) -> None:
    model = VITS[kind]()
    groups = parameter_groups(model, 0.1, layer_decay=0.5)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    for name, param in params.items():
        if name.startswith(("patch_embed.", "pos_embed.", "cls_token", "dist_token")):
            expected = 0.125
        elif name.startswith("blocks."):
            expected = 0.5 ** (2 - int(name.split(".")[1]))
        else:
            expected = 1.0
        assert scale_of[id(param)] == expected, name
    assert len(scale_of) == len(params)


@pytest.mark.parametrize("kind", list(CONVNETS))
def test_layer_decay_and_patch_freezing_refuse_a_convnet(kind: str) -> None:
    model = CONVNETS[kind]()
    with pytest.raises(ValueError, match="optim.layer_decay needs a ViT"):
        parameter_groups(model, 0.0, layer_decay=0.7)
    with pytest.raises(ValueError, match="has no patch embedding"):
        freeze(model, SimpleNamespace(linear_probe=False, freeze_patch_embed=True))


@pytest.mark.parametrize("kind", list(VITS))
def test_freeze_patch_embed_fixes_exactly_the_patch_embedding(kind: str) -> None:
    model = VITS[kind]()
    freeze(model, SimpleNamespace(linear_probe=False, freeze_patch_embed=True))
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {name for name in dict(model.named_parameters()) if name.startswith("patch_embed.")}


@pytest.mark.parametrize("kind", list(ALL))
def test_activation_checkpointing_wraps_the_blocks_or_refuses(kind: str) -> None:
    model = ALL[kind]()
    if kind in CONVNETS:
        with pytest.raises(ValueError, match="activation checkpointing needs a model with transformer blocks"):
            apply_activation_checkpointing(model)
        return
    x = images()
    before = model(x)
    apply_activation_checkpointing(model)
    assert all(type(block).__name__ == "CheckpointWrapper" for block in model.block_list())
    torch.testing.assert_close(model(x), before)


def low_res(low: int, size: int) -> SimpleNamespace:
    """The two settings `check_low_res` reads."""
    return SimpleNamespace(run=SimpleNamespace(low_res_size=low), data=SimpleNamespace(img_size=size))


@pytest.mark.parametrize("kind", list(VITS))
def test_preflight_needs_a_low_resolution_the_patches_tile(kind: str) -> None:
    model = VITS[kind]()
    check_low_res(low_res(8, 16), model)
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        check_low_res(low_res(10, 16), model)


def test_preflight_checks_a_convnets_low_resolution_against_its_own_config() -> None:
    check_low_res(low_res(8, 32), CONVNETS["resnet20"]())  # any size pools
    with pytest.raises(ValueError, match="run.low_res_size 4 is too small for CifarVGG: img_size"):
        check_low_res(low_res(4, 32), CONVNETS["vgg8"]())  # three 2x max pools need at least 9 px
    with pytest.raises(ValueError, match="must be smaller than data.img_size 32"):
        check_low_res(low_res(32, 32), CONVNETS["resnet20"]())


@pytest.mark.parametrize("kind", list(ALL))
def test_per_head_evaluation_and_distillation_read_the_heads(kind: str) -> None:
    model = ALL[kind]().eval()
    x = images(16 if kind in VITS else 32)
    if kind in CONVNETS:
        with pytest.raises(ValueError, match="per-head evaluation needs a ViT"):
            head_logits(model, x, heads=True)
    else:
        outputs = head_logits(model, x, heads=True)
        assert set(outputs) == {AVERAGE, "cls"} | ({"dist"} if kind == "distilled" else set())
        torch.testing.assert_close(outputs[AVERAGE], model(x))
    if kind == "distilled":
        check_student(model)
    else:
        with pytest.raises(ValueError, match="has none: add --distilled"):
            check_student(model)


@pytest.mark.parametrize("kind", list(ALL))
def test_fewshot_takes_the_vits_only(kind: str) -> None:
    model = ALL[kind]()
    if kind in VITS:
        check_features(model)
    else:
        with pytest.raises(ValueError, match="has no pre-logit features .*needs a ViT checkpoint"):
            check_features(model)


def test_labels_of_reads_vitkit_models_and_foreign_classifiers() -> None:
    model = VITS["vit"]()
    model.class_names = ["a", "b", "c"]
    assert labels_of(model) == (3, ["a", "b", "c"])
    foreign = nn.Linear(4, 5)
    foreign.num_classes = 5  # as timm's models say it
    assert labels_of(foreign) == (5, None)
    assert labels_of(nn.Linear(4, 5)) == (None, None)


# --- Mini, formerly mu ----------------------------------------------------------------------------------------


def test_mini_is_vitkits_own_width_and_mu_is_not_claimed_as_big_visions() -> None:
    assert VARIANTS["Mini"] == (128, 6, 512, 2)
    assert "mu" not in VARIANTS  # big_vision's mu is (32, 1, 128, 2): vitkit does not pretend to have it


def test_the_old_name_mu_builds_mini_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    registry_module.warn_renamed.cache_clear()
    with caplog.at_level(logging.WARNING, logger="vitkit.models"):
        old, new = model_config("mu/4", img_size=32), model_config("Mini/4", img_size=32)
        model_config("C20+mu/4", img_size=32)
    assert old.replace(name=new.name) == new
    assert [r.getMessage() for r in caplog.records] == [
        "model width 'mu' is vitkit's old name for Mini (128 wide, 6 layers; not big_vision's mu): it builds Mini"
    ]
    assert parse_variant("C20+mu/4")["stem"] == "C20"


def test_an_old_checkpoint_named_mu_loads(tmp_path: Path) -> None:
    model = vitkit.create_model("mu/4", img_size=16, num_classes=3, depth=1)
    vitkit.save(model, tmp_path / "old")
    assert json.loads((tmp_path / "old" / "config.json").read_text())["model"]["name"] == "mu/4"
    loaded = vitkit.load(tmp_path / "old").eval()
    torch.testing.assert_close(loaded(images()), model.eval()(images()))


def test_vitkit_models_lists_mini_under_both_names(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "Mini/4", "mu/4", "--img-size", "32", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["hidden_dim"], r["depth"], r["num_heads"]) for r in rows] == [
        ("Mini/4", 128, 6, 2),
        ("mu/4", 128, 6, 2),
    ]
    assert rows[0]["params"] == rows[1]["params"]


# --- one resolve_device, one set of precisions ----------------------------------------------------------------


def test_resolve_device_picks_this_ranks_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    current = []
    monkeypatch.setattr(device_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device_module.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(device_module.torch.cuda, "set_device", current.append)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1) and current == [1]
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module.torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", local_rank=1) == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda:1 was requested but torch sees no CUDA device"):
        resolve_device("cuda:1")


def test_training_and_inference_precisions_are_named_subsets_of_one_list() -> None:
    assert set(TRAINING_PRECISIONS) == {"auto", *PRECISIONS}
    assert INFERENCE_PRECISIONS == ("fp32", "bf16") and set(INFERENCE_PRECISIONS) < set(PRECISIONS)
