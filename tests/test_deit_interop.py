"""DeiT checkpoints: timm's `deit_*` state dicts and Hugging Face's DeiT directories load with their logits.

timm layouts are generated from random vitkit models and checked against a direct forward written on the
timm state dict; Hugging Face models are random-init transformers DeiTs saved with save_pretrained.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F

import vitkit
from test_hf_parity import SMALL, images, randomize_, relative_error
from test_interop_formats import random_vit, to_timm
from vitkit.checkpoints import read_checkpoint

transformers = pytest.importorskip("transformers")

# DeiT-Ti's width, so the head count (3) comes from timm's widths as for a real deit_tiny checkpoint.
TI = {"hidden_dim": 192, "num_heads": 3, "mlp_dim": 256}


def timm_reference(state: dict[str, torch.Tensor], x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """timm's VisionTransformer / VisionTransformerDistilled eval forward, written directly on its state dict."""
    stem = state["patch_embed.proj.weight"]
    z = F.conv2d(x, stem, state["patch_embed.proj.bias"], stride=stem.shape[-1]).flatten(2).transpose(1, 2)
    prefix = [state[key].expand(len(x), -1, -1) for key in ("cls_token", "dist_token") if key in state]
    z = torch.cat([*prefix, z], dim=1) + state["pos_embed"]
    batch, tokens, dim = z.shape
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})

    def norm(y: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(y, (dim,), state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-6)

    def linear(y: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(y, state[f"{name}.weight"], state[f"{name}.bias"])

    for i in range(depth):
        qkv = linear(norm(z, f"blocks.{i}.norm1"), f"blocks.{i}.attn.qkv")
        q, k, v = qkv.reshape(batch, tokens, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1) * (dim // num_heads) ** -0.5).softmax(dim=-1)
        z = z + linear((attention @ v).transpose(1, 2).reshape(batch, tokens, dim), f"blocks.{i}.attn.proj")
        z = z + linear(F.gelu(linear(norm(z, f"blocks.{i}.norm2"), f"blocks.{i}.mlp.fc1")), f"blocks.{i}.mlp.fc2")
    z = norm(z, "norm")
    logits = linear(z[:, 0], "head")
    if "head_dist.weight" in state:  # deit_*_distilled_*: the mean of both heads at inference
        logits = (logits + linear(z[:, 1], "head_dist")) / 2
    return logits


# --- timm -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("distilled", [False, True])
def test_timm_deit_matches_a_direct_forward(tmp_path, distilled):
    state = to_timm(random_vit(distilled=distilled, **TI))
    if distilled:
        assert {"dist_token", "head_dist.weight"} <= set(state) and state["pos_embed"].shape == (1, 16 + 2, 192)
    torch.save({"model": state}, tmp_path / "deit.pth")  # DeiT's releases wrap the state dict in "model"
    checkpoint = read_checkpoint(tmp_path / "deit.pth")
    assert checkpoint.format == "timm" and checkpoint.config.distilled == distilled
    assert checkpoint.heads_inferred and checkpoint.config.num_heads == 3
    model = vitkit.load(tmp_path / "deit.pth").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert relative_error(model(x), timm_reference(state, x, num_heads=3)) <= 1e-5
        assert set(model.forward_heads(model.forward_features(x))) == ({"cls", "dist"} if distilled else {"cls"})


def test_timm_distilled_at_a_new_resolution_keeps_both_prefix_positions(tmp_path):
    state = to_timm(random_vit(distilled=True, **TI))
    torch.save(state, tmp_path / "deit.pth")
    model = vitkit.create_model(pretrained=tmp_path / "deit.pth", img_size=48)
    assert model.pos_embed.weight.shape == (1, 2 + 36, 192)
    torch.testing.assert_close(model.pos_embed.weight[:, :2], state["pos_embed"][:, :2])


def test_timm_distilled_without_prefix_positions_gets_zero_entries(tmp_path):
    # A table over the patches only (E_pos added before the prefix tokens) is the same function with zeros there.
    model = random_vit(distilled=True, **TI)
    with torch.no_grad():
        model.pos_embed.weight[:, :2] = 0
    state = to_timm(model)
    state["pos_embed"] = state["pos_embed"][:, 2:]
    torch.save(state, tmp_path / "deit.pth")
    loaded = vitkit.load(tmp_path / "deit.pth").eval()
    torch.testing.assert_close(loaded.pos_embed.weight, model.pos_embed.weight)


# --- Hugging Face -------------------------------------------------------------------------------------------


def hf_deit(cls, seed: int = 0, **config):
    """A random-init transformers DeiT of the given class and config."""
    torch.manual_seed(seed)
    return randomize_(cls(transformers.DeiTConfig(**{**SMALL, **config})), seed)


def test_hf_deit_with_teacher_matches_both_heads(tmp_path):
    labels = {0: "cat", 1: "dog", 2: "bird"}
    reference = hf_deit(transformers.DeiTForImageClassificationWithTeacher, id2label=labels)
    reference.save_pretrained(tmp_path)
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint.format == "hf" and checkpoint.config.distilled and checkpoint.config.num_prefix_tokens == 2
    assert checkpoint.class_names == ["cat", "dog", "bird"]
    model = vitkit.load(tmp_path).eval()
    with torch.no_grad():
        want = reference(images(40))
        heads = model.forward_heads(model.forward_features(images(40)))
        assert relative_error(model(images(40)), want.logits) <= 1e-4  # HF averages the heads, as vitkit does
        assert relative_error(heads["cls"], want.cls_logits) <= 1e-4
        assert relative_error(heads["dist"], want.distillation_logits) <= 1e-4


def test_hf_deit_model_features_and_pooler(tmp_path):
    reference = hf_deit(transformers.DeiTModel, seed=1)
    reference.save_pretrained(tmp_path)
    model = vitkit.load(tmp_path).eval()
    assert model.config.num_classes == 0 and model.config.representation_size == 64 and model.config.distilled
    with torch.no_grad():
        want = reference(images(40))
        features = model.forward_features(images(40))
        assert relative_error(features, want.last_hidden_state) <= 1e-4
        # DeiTModel's pooler reads the class token only: vitkit's "cls" head input (its head is the identity).
        assert relative_error(model.forward_heads(features)["cls"], want.pooler_output) <= 1e-4


def test_hf_deit_new_resolution_matches_interpolate_pos_encoding(tmp_path, caplog):
    torch.manual_seed(2)
    reference = randomize_(transformers.DeiTModel(transformers.DeiTConfig(**SMALL), add_pooling_layer=False), 2)
    reference.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="vitkit.checkpoints.adapt"):
        model = vitkit.create_model(pretrained=tmp_path, img_size=56).eval()
    assert "5x5 grid (40x40 px) to 7x7 (56x56 px)" in caplog.text and model.pre_logits is None
    with torch.no_grad():
        want = reference(images(56), interpolate_pos_encoding=True).last_hidden_state
        assert relative_error(model.forward_features(images(56)), want) <= 1e-4


def test_hf_deit_in_memory_names(tmp_path):
    reference = hf_deit(transformers.DeiTForImageClassificationWithTeacher, seed=3, num_labels=4)
    reference.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")  # transformers 5: `deit.layers.N.*`
    with torch.no_grad():
        assert relative_error(vitkit.load(tmp_path).eval()(images(40)), reference(images(40)).logits) <= 1e-4


def test_hf_deit_without_teacher_head_is_refused(tmp_path):
    hf_deit(transformers.DeiTForImageClassification, num_labels=3).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"is a DeiTForImageClassification: it classifies from the class token alone"):
        read_checkpoint(tmp_path)


def test_hf_deit_config_must_fit_both_prefix_tokens(tmp_path):
    hf_deit(transformers.DeiTForImageClassificationWithTeacher, num_labels=3).save_pretrained(tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**document, "image_size": 48}))
    with pytest.raises(ValueError, match=r"has 27 entries, but a 48x48 image in 8x8 patches needs 36 \+ 2 \(prefix"):
        read_checkpoint(tmp_path)
