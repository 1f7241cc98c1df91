"""Foreign checkpoints (timm state dicts, JAX .npz) built from vitkit models by the documented inverse mappings.

Each fixture writes a random vitkit model in a foreign layout; loading it back must give the same logits.
"""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vitkit
from vitkit.checkpoints import read_checkpoint
from vitkit.checkpoints.formats import read_torch_file
from vitkit.models import VisionTransformer, ViTConfig
from vitkit.models.posemb import resample_posemb

TINY = {"img_size": 32, "patch_size": 8, "hidden_dim": 64, "depth": 2, "num_heads": 4, "mlp_dim": 128}


def random_vit(seed: int = 0, **fields) -> VisionTransformer:
    """A tiny ViT whose every parameter is random and O(1), so a wrong mapping changes the logits."""
    torch.manual_seed(seed)
    model = VisionTransformer(ViTConfig(**{**TINY, "num_classes": 5, **fields}))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and not name.startswith(("pos_embed", "cls_token")):
                param.normal_(0, param[0].numel() ** -0.5)
            elif "norm" in name and name.endswith("weight"):
                param.normal_(1.0, 0.1)
            else:
                param.normal_(0, 0.5 if param.ndim >= 2 else 0.1)
    return model.eval()


def images(size: int = 32, seed: int = 1) -> torch.Tensor:
    """A fixed batch of two images."""
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_same_logits(reference: VisionTransformer, loaded: VisionTransformer, size: int = 32) -> None:
    """max|diff| / max|ref| <= 1e-5 in fp32 eval."""
    x = images(size)
    with torch.no_grad():
        want, got = reference(x), loaded.eval()(x)
    assert got.shape == want.shape
    assert (got - want).abs().max() / want.abs().max() <= 1e-5


# --- timm -------------------------------------------------------------------------------------------------


def to_timm(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """vitkit -> timm vision_transformer.py names (only pos_embed and the in21k pre_logits.fc differ)."""
    renames = {"pos_embed.weight": "pos_embed", "pre_logits.weight": "pre_logits.fc.weight"}
    renames["pre_logits.bias"] = "pre_logits.fc.bias"
    return {renames.get(k, k): v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("filename", "wrapper"),
    [("vit.pth", None), ("vit.pt", "model"), ("pytorch_model.bin", "state_dict"), ("vit.safetensors", None)],
)
def test_timm_state_dict_loads_with_same_logits(tmp_path, filename, wrapper):
    model = random_vit()
    state = to_timm(model)
    path = tmp_path / filename
    if path.suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({wrapper: state, "epoch": 3} if wrapper else state, path)
    # 64 wide is not a width timm releases: the head count must be given.
    checkpoint = read_checkpoint(path, num_heads=4)
    assert checkpoint.format == "timm" and not checkpoint.heads_inferred and checkpoint.config.num_heads == 4
    assert checkpoint.config.img_size == (32, 32) and checkpoint.config.patch_size == (8, 8)
    assert (checkpoint.config.hidden_dim, checkpoint.config.depth, checkpoint.config.mlp_dim) == (64, 2, 128)
    assert checkpoint.config.num_classes == 5 and checkpoint.config.pool == "token"
    assert_same_logits(model, vitkit.create_model(pretrained=path, num_heads=4))


def test_timm_ddp_prefix_is_stripped(tmp_path):
    model = random_vit()
    torch.save({f"module.{k}": v for k, v in to_timm(model).items()}, tmp_path / "ddp.pth")
    assert_same_logits(model, vitkit.create_model(pretrained=tmp_path / "ddp.pth", num_heads=4))


def test_timm_heads_come_from_timm_widths(tmp_path):
    model = random_vit(hidden_dim=192, mlp_dim=256, num_heads=3)  # DeiT-Ti's width (3 heads), at any depth
    save_file(to_timm(model), tmp_path / "ti.safetensors")
    checkpoint = read_checkpoint(tmp_path / "ti.safetensors")
    assert checkpoint.heads_inferred and checkpoint.config.num_heads == 3
    assert_same_logits(model, vitkit.load(tmp_path / "ti.safetensors"))


def test_timm_width_timm_lacks_needs_num_heads(tmp_path):
    # Issue 9: a 128-wide 4-head model used to load with 2 heads (big_vision's mu width), changing its outputs.
    model = random_vit(hidden_dim=128, mlp_dim=256, num_heads=4)
    save_file(to_timm(model), tmp_path / "w128.safetensors")
    message = (
        r"width 128 is not one timm releases models at; give it, e\.g\. create_model\(pretrained=\.\.\., num_heads=4\)"
    )
    with pytest.raises(ValueError, match=message):
        vitkit.load(tmp_path / "w128.safetensors")
    loaded = vitkit.create_model(pretrained=tmp_path / "w128.safetensors", num_heads=4)
    assert loaded.config.num_heads == 4
    assert_same_logits(model, loaded)


def test_timm_in21k_pre_logits(tmp_path):
    model = random_vit(representation_size=48, num_classes=7)
    state = to_timm(model)
    assert "pre_logits.fc.weight" in state
    torch.save(state, tmp_path / "in21k.pth")
    loaded = vitkit.create_model(pretrained=tmp_path / "in21k.pth", num_heads=4)
    assert loaded.config.representation_size == 48
    assert_same_logits(model, loaded)


def test_timm_gap_without_class_token(tmp_path):
    model = random_vit(pool="gap")
    torch.save(to_timm(model), tmp_path / "gap.pth")
    loaded = vitkit.create_model(pretrained=tmp_path / "gap.pth", num_heads=4)
    assert loaded.config.pool == "gap"
    assert_same_logits(model, loaded)


def test_timm_no_embed_class_gets_a_zero_class_position(tmp_path):
    # timm's no_embed_class (and big_vision) add E_pos to the patches only: cls + 0 is the same function.
    model = random_vit()
    with torch.no_grad():
        model.pos_embed.weight[:, 0] = 0
    state = to_timm(model)
    state["pos_embed"] = state["pos_embed"][:, 1:]
    save_file(state, tmp_path / "noembed.safetensors")
    assert_same_logits(model, vitkit.create_model(pretrained=tmp_path / "noembed.safetensors", num_heads=4))


def test_timm_fc_norm_is_refused_with_the_reason(tmp_path):
    state = to_timm(random_vit(pool="gap"))
    state["fc_norm.weight"], state["fc_norm.bias"] = torch.ones(64), torch.zeros(64)
    torch.save(state, tmp_path / "avg.pth")
    with pytest.raises(ValueError, match=r"fc_norm.*after pooling.*mean\(LN\(tokens\)\)"):
        read_checkpoint(tmp_path / "avg.pth")


def test_timm_layer_scale_is_refused(tmp_path):
    state = to_timm(random_vit())
    state["blocks.0.ls1.gamma"] = torch.ones(64)
    torch.save(state, tmp_path / "deit3.pth")
    with pytest.raises(ValueError, match="LayerScale"):
        read_checkpoint(tmp_path / "deit3.pth")


def test_pickled_python_objects_are_never_unpickled(tmp_path):
    import argparse

    torch.save({"model": to_timm(random_vit()), "args": argparse.Namespace(lr=0.1)}, tmp_path / "train.pth")
    with pytest.raises(ValueError, match="never unpickles code"):
        read_checkpoint(tmp_path / "train.pth")


# --- JAX ----------------------------------------------------------------------------------------------------


def to_jax(model: VisionTransformer, flavour: str = "paper", scanned: bool = False) -> dict[str, np.ndarray]:
    """vitkit -> Flax parameter names and shapes (google-research/vision_transformer or big_vision)."""
    config = model.config
    dim, heads = config.hidden_dim, config.num_heads
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    names = {
        "paper": ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"),
        "big_vision": ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0"),
    }[flavour]
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": sd["patch_embed.proj.bias"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
    }
    posemb = sd["pos_embed.weight"]
    if flavour == "paper":
        out["Transformer/posembed_input/pos_embedding"] = posemb
        if "cls_token" in sd:
            out["cls"] = sd["cls_token"]
    else:  # big_vision adds E_pos to the patches, then prepends an un-embedded class token
        prefix = config.num_prefix_tokens
        out["pos_embedding"] = posemb[:, prefix:]
        if "cls_token" in sd:
            out["cls"] = sd["cls_token"] + posemb[:, :1]
    for name in ("pre_logits", "head"):
        if f"{name}.weight" in sd:
            out[f"{name}/kernel"], out[f"{name}/bias"] = sd[f"{name}.weight"].T, sd[f"{name}.bias"]
    blocks = []
    for i in range(config.depth):
        p = f"blocks.{i}."
        norm1, attn, norm2, mlp = names
        q, k, v = np.split(sd[p + "attn.qkv.weight"], 3)
        qb, kb, vb = np.split(sd[p + "attn.qkv.bias"], 3)
        block = {
            f"{norm1}/scale": sd[p + "norm1.weight"],
            f"{norm1}/bias": sd[p + "norm1.bias"],
            f"{norm2}/scale": sd[p + "norm2.weight"],
            f"{norm2}/bias": sd[p + "norm2.bias"],
            f"{attn}/out/kernel": sd[p + "attn.proj.weight"].T.reshape(heads, dim // heads, dim),
            f"{attn}/out/bias": sd[p + "attn.proj.bias"],
            f"{mlp}/Dense_0/kernel": sd[p + "mlp.fc1.weight"].T,
            f"{mlp}/Dense_0/bias": sd[p + "mlp.fc1.bias"],
            f"{mlp}/Dense_1/kernel": sd[p + "mlp.fc2.weight"].T,
            f"{mlp}/Dense_1/bias": sd[p + "mlp.fc2.bias"],
        }
        for proj, weight, bias in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            block[f"{attn}/{proj}/kernel"] = weight.T.reshape(dim, heads, dim // heads)  # (D, heads, head_dim)
            block[f"{attn}/{proj}/bias"] = bias.reshape(heads, dim // heads)
        blocks.append(block)
    if scanned:
        out.update({f"Transformer/encoderblock/{k}": np.stack([b[k] for b in blocks]) for k in blocks[0]})
    else:
        for i, block in enumerate(blocks):
            out.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in block.items()})
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


@pytest.mark.parametrize("prefix", ["", "opt/target/"])
def test_jax_npz_loads_with_same_logits(tmp_path, prefix):
    model = random_vit(num_heads=2, activation="gelu_tanh")
    np.savez(tmp_path / "vit.npz", **{prefix + k: v for k, v in to_jax(model).items()})
    checkpoint = read_checkpoint(tmp_path / "vit.npz")
    # Flax keeps heads apart, so the head count is read, not guessed; flax's GELU is the tanh approximation.
    assert checkpoint.format == "jax" and not checkpoint.heads_inferred and checkpoint.config.num_heads == 2
    assert checkpoint.config.activation == "gelu_tanh"
    assert_same_logits(model, vitkit.load(tmp_path / "vit.npz"))


def flax_vit_reference(arrays: dict[str, np.ndarray], x: torch.Tensor) -> np.ndarray:
    """The paper's Flax ViT forward (google-research/vision_transformer), written directly on its .npz arrays.

    float64 numpy; flax's LayerNorm (eps 1e-6), per-head attention kernels and nn.gelu (tanh approximation).
    """
    p = {key: value.astype(np.float64) for key, value in arrays.items()}

    def layer_norm(y, scope):
        mean, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
        return (y - mean) / np.sqrt(var + 1e-6) * p[f"{scope}/scale"] + p[f"{scope}/bias"]

    def dense(y, scope):
        return y @ p[f"{scope}/kernel"] + p[f"{scope}/bias"]

    ph, pw, channels, dim = p["embedding/kernel"].shape
    images = x.double().numpy().transpose(0, 2, 3, 1)  # NHWC, as flax
    batch, height, width, _ = images.shape
    patches = images.reshape(batch, height // ph, ph, width // pw, pw, channels).transpose(0, 1, 3, 2, 4, 5)
    z = patches.reshape(batch, -1, ph * pw * channels) @ p["embedding/kernel"].reshape(-1, dim) + p["embedding/bias"]
    z = np.concatenate([np.broadcast_to(p["cls"], (batch, 1, dim)), z], axis=1)
    z = z + p["Transformer/posembed_input/pos_embedding"]
    depth = len({key.split("/")[1] for key in p if key.startswith("Transformer/encoderblock_")})
    for index in range(depth):
        scope = f"Transformer/encoderblock_{index}"
        y = layer_norm(z, f"{scope}/LayerNorm_0")
        attn = f"{scope}/MultiHeadDotProductAttention_1"
        q, k, v = (
            np.einsum("btd,dhk->bthk", y, p[f"{attn}/{name}/kernel"]) + p[f"{attn}/{name}/bias"]
            for name in ("query", "key", "value")
        )
        logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        heads = np.einsum("bhqs,bshk->bqhk", weights, v)
        z = z + np.einsum("bqhk,hkd->bqd", heads, p[f"{attn}/out/kernel"]) + p[f"{attn}/out/bias"]
        y = dense(layer_norm(z, f"{scope}/LayerNorm_2"), f"{scope}/MlpBlock_3/Dense_0")
        y = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y**3)))
        z = z + dense(y, f"{scope}/MlpBlock_3/Dense_1")
    return dense(layer_norm(z, "Transformer/encoder_norm")[:, 0], "head")


def test_jax_npz_matches_the_flax_forward_with_tanh_gelu(tmp_path):
    arrays = to_jax(random_vit(num_heads=2))
    np.savez(tmp_path / "vit.npz", **arrays)
    want = flax_vit_reference(arrays, images())
    with torch.no_grad():
        got = vitkit.load(tmp_path / "vit.npz")(images()).double().numpy()
        exact_gelu = vitkit.load(tmp_path / "vit.npz", activation="gelu")(images()).double().numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-5
    # The tolerance tells the two GELUs apart: exact GELU misses the reference (by ~1e-4 relative here).
    assert np.abs(exact_gelu - want).max() / np.abs(want).max() > 1e-5


def test_jax_gap_checkpoint(tmp_path):
    model = random_vit(pool="gap", activation="gelu_tanh")
    np.savez(tmp_path / "gap.npz", **to_jax(model))
    loaded = vitkit.load(tmp_path / "gap.npz")
    assert loaded.config.pool == "gap" and loaded.cls_token is None
    assert_same_logits(model, loaded)


def test_jax_pre_logits(tmp_path):
    model = random_vit(representation_size=32, num_classes=11, activation="gelu_tanh")
    np.savez_compressed(tmp_path / "in21k.npz", **to_jax(model))
    loaded = vitkit.load(tmp_path / "in21k.npz")
    assert loaded.config.representation_size == 32 and loaded.config.num_classes == 11
    assert_same_logits(model, loaded)


@pytest.mark.parametrize("scanned", [False, True])
def test_big_vision_naming(tmp_path, scanned):
    model = random_vit(activation="gelu_tanh")
    np.savez(tmp_path / "bv.npz", **{f"params/{k}": v for k, v in to_jax(model, "big_vision", scanned).items()})
    assert_same_logits(model, vitkit.load(tmp_path / "bv.npz"))


def test_jax_map_head_is_refused(tmp_path):
    arrays = to_jax(random_vit(pool="gap"))
    arrays["MAPHead_0/probe"] = np.zeros((1, 1, 64), np.float32)
    np.savez(tmp_path / "map.npz", **arrays)
    with pytest.raises(ValueError, match="MAP head"):
        read_checkpoint(tmp_path / "map.npz")


def test_big_vision_sincos_posemb_is_refused(tmp_path):
    arrays = to_jax(random_vit(pool="gap"), "big_vision")
    del arrays["pos_embedding"]
    np.savez(tmp_path / "sincos.npz", **arrays)
    with pytest.raises(ValueError, match="sincos2d"):
        read_checkpoint(tmp_path / "sincos.npz")


# --- adapting: new resolution / classes, model names ----------------------------------------------------------


def write(kind: str, model: VisionTransformer, tmp_path) -> tuple:
    """Save `model` in a format; returns the path and the overrides its loading needs."""
    if kind == "timm":
        torch.save(to_timm(model), tmp_path / "timm.pth")
        return tmp_path / "timm.pth", {"num_heads": model.config.num_heads}
    if kind == "jax":
        np.savez(tmp_path / "jax.npz", **to_jax(model))
        return tmp_path / "jax.npz", {}
    vitkit.save(model, tmp_path / "native")
    return tmp_path / "native", {}


@pytest.mark.parametrize("kind", ["timm", "jax", "vitkit"])
def test_new_resolution_and_classes(tmp_path, caplog, kind):
    model = random_vit()
    path, overrides = write(kind, model, tmp_path)
    with caplog.at_level(logging.INFO, logger="vitkit.checkpoints.adapt"):
        loaded = vitkit.create_model(pretrained=path, img_size=48, num_classes=3, **overrides)
    records = [r for r in caplog.records if r.name == "vitkit.checkpoints.adapt"]
    assert len(records) == 1
    assert "4x4 grid" in records[0].getMessage() and "6x6" in records[0].getMessage()
    assert "head re-initialised (zeros) for 3 classes (was 5)" in records[0].getMessage()
    assert torch.count_nonzero(loaded.head.weight) == 0 and torch.count_nonzero(loaded.head.bias) == 0
    want = resample_posemb(model.pos_embed.weight.detach(), (6, 6), (4, 4), num_prefix_tokens=1)
    torch.testing.assert_close(loaded.pos_embed.weight.detach(), want)
    torch.testing.assert_close(loaded.blocks[1].attn.qkv.weight, model.blocks[1].attn.qkv.weight)


def test_headless_checkpoint_gets_a_zero_head_and_a_classifier_can_drop_it(tmp_path, caplog):
    model = random_vit(num_classes=0)
    torch.save(to_timm(model), tmp_path / "headless.pth")
    assert read_checkpoint(tmp_path / "headless.pth", num_heads=4).config.num_classes == 0
    with caplog.at_level(logging.INFO, logger="vitkit.checkpoints.adapt"):
        loaded = vitkit.create_model(pretrained=tmp_path / "headless.pth", num_classes=4, num_heads=4)
    assert "head re-initialised (zeros) for 4 classes (was 0)" in caplog.text
    assert loaded.head.weight.shape == (4, 64) and torch.count_nonzero(loaded.head.weight) == 0

    classifier = random_vit()
    torch.save(to_timm(classifier), tmp_path / "classifier.pth")
    features = vitkit.create_model(pretrained=tmp_path / "classifier.pth", num_classes=0, num_heads=4).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            features(images()), classifier.forward_head(classifier.forward_features(images()), True)
        )


def test_wrong_model_name_is_refused(tmp_path):
    torch.save(to_timm(random_vit()), tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match=r"hidden_dim=64 but model 'mu/8' has 128; pass the matching model name"):
        vitkit.create_model("mu/8", pretrained=tmp_path / "tiny.pth")
    # The name's head count is tried on the timm weights first; B's 12 heads cannot split a 64-wide model.
    with pytest.raises(ValueError, match=r"12 heads do not divide its width 64; check the model name"):
        vitkit.create_model("B/16", pretrained=tmp_path / "tiny.pth")


# --- broken and unknown files ---------------------------------------------------------------------------------


def truncate(path, keep: float = 0.5) -> None:
    """Cut a file short, as an interrupted download does."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("filename", ["vit.safetensors", "vit.pth", "vit.npz", "legacy.pth"])
def test_truncated_files_are_reported_by_name(tmp_path, filename):
    model = random_vit()
    path = tmp_path / filename
    if filename.endswith(".safetensors"):
        save_file(to_timm(model), path)
    elif filename.endswith(".npz"):
        np.savez(path, **to_jax(model))
    else:
        torch.save(to_timm(model), path, _use_new_zipfile_serialization=filename != "legacy.pth")
    truncate(path)
    with pytest.raises(ValueError, match=rf"{filename}.*truncated or corrupt"):
        read_checkpoint(path)


def test_corrupt_npz_member_is_reported_by_name(tmp_path):
    path = tmp_path / "vit.npz"
    np.savez_compressed(path, **to_jax(random_vit()))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("embedding/kernel.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start : start + 64] = bytes(64)  # zero the compressed data but keep the archive's directory
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"vit\.npz.*truncated or corrupt"):
        read_checkpoint(path)


@pytest.mark.parametrize("damage", ["text", "zip_start", "legacy_cut"])
def test_damaged_torch_files_are_reported_with_their_cause(tmp_path, damage):
    path = tmp_path / "vit.pth"
    torch.save(to_timm(random_vit()), path, _use_new_zipfile_serialization=damage != "legacy_cut")
    data = path.read_bytes()
    path.write_bytes({"text": b"hello world", "zip_start": data[:100], "legacy_cut": data[: len(data) // 3]}[damage])
    with pytest.raises(ValueError, match=r"vit\.pth.*truncated or corrupt") as caught:
        read_torch_file(path)
    assert caught.value.__cause__ is not None  # torch's own reason stays attached


def test_a_bug_while_reading_a_torch_file_keeps_its_traceback(tmp_path, monkeypatch):
    torch.save(to_timm(random_vit()), tmp_path / "vit.pth")

    def broken(*args, **kwargs):
        raise TypeError("load() got an unexpected keyword argument")

    monkeypatch.setattr(torch, "load", broken)
    with pytest.raises(TypeError, match="unexpected keyword"):
        read_torch_file(tmp_path / "vit.pth")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pth is empty"):
        read_checkpoint(tmp_path / "empty.pth")


def test_unknown_content_lists_the_supported_formats(tmp_path):
    (tmp_path / "notes.bin").write_bytes(b"hello, this is not a checkpoint at all")
    with pytest.raises(ValueError, match="not a checkpoint vitkit recognises.*Supported: a vitkit checkpoint"):
        read_checkpoint(tmp_path / "notes.bin")


def test_unknown_state_dict_layout(tmp_path):
    save_file({"encoder.conv.weight": torch.zeros(2, 2)}, tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match=r"unknown weight layout \(keys: encoder.conv.weight.*Supported"):
        read_checkpoint(tmp_path / "resnet.safetensors")
    np.savez(tmp_path / "other.npz", w=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not of a JAX ViT"):
        read_checkpoint(tmp_path / "other.npz")


def test_bare_vitkit_state_dict_says_how_to_save(tmp_path):
    torch.save(random_vit().state_dict(), tmp_path / "sd.pth")
    with pytest.raises(ValueError, match=r"bare vitkit state dict.*vitkit.save"):
        read_checkpoint(tmp_path / "sd.pth")


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")


def test_unreadable_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="directory vitkit cannot read"):
        read_checkpoint(tmp_path)
