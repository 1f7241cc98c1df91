"""Parity with Hugging Face transformers: random-init ViTs saved with save_pretrained give the same outputs."""

from __future__ import annotations

import json
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

import vitkit  # noqa: E402
from vitkit.checkpoints import read_checkpoint  # noqa: E402
from vitkit.cli.main import main  # noqa: E402

SMALL = {
    "image_size": 40,
    "patch_size": 8,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
}


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """O(1) random values everywhere (transformers' 0.02-std init makes attention nearly uniform, hiding bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embeddings.cls_token" in name or "position_embeddings" in name:
                std, mean = 0.5, 0.0
            elif param.ndim >= 2:
                std, mean = param[0].numel() ** -0.5, 0.0
            else:
                std, mean = 0.1, 1.0 if "norm" in name and name.endswith("weight") else 0.0
            param.copy_(torch.randn(param.shape, generator=generator) * std + mean)
    return model.eval()


def hf_model(cls, seed: int = 0, **config):
    """A random-init transformers ViT of the given class and config."""
    torch.manual_seed(seed)
    return randomize_(cls(transformers.ViTConfig(**config)), seed)


def images(size: int, batch: int = 2) -> torch.Tensor:
    """A fixed batch of random images."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max|diff| / max|ref|."""
    assert got.shape == want.shape
    return ((got - want).abs().max() / want.abs().max()).item()


def test_b16_224_parity(tmp_path):
    reference = hf_model(transformers.ViTForImageClassification, num_labels=1000)
    reference.save_pretrained(tmp_path)
    x = images(224, batch=1)
    with torch.no_grad():
        want = reference(x).logits
        by_checkpoint = vitkit.create_model(pretrained=tmp_path).eval()(x)
        by_name = vitkit.create_model("B/16", pretrained=tmp_path).eval()(x)
    assert relative_error(by_checkpoint, want) <= 1e-4
    assert relative_error(by_name, want) <= 1e-4


def test_small_model_at_40px_with_labels(tmp_path):
    labels = {0: "cat", 1: "dog", 2: "bird"}
    reference = hf_model(transformers.ViTForImageClassification, seed=1, id2label=labels, **SMALL)
    reference.save_pretrained(tmp_path)
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint.format == "hf" and not checkpoint.heads_inferred
    config = checkpoint.config
    assert (config.img_size, config.patch_size, config.num_heads, config.num_classes) == ((40, 40), (8, 8), 4, 3)
    assert config.layer_norm_eps == 1e-12 and config.qkv_bias and config.representation_size is None
    model = vitkit.load(tmp_path).eval()
    assert model.class_names == ["cat", "dog", "bird"]
    with torch.no_grad():
        assert relative_error(model(images(40)), reference(images(40)).logits) <= 1e-4


def test_placeholder_labels_are_not_class_names(tmp_path):
    hf_model(transformers.ViTForImageClassification, num_labels=3, **SMALL).save_pretrained(tmp_path)
    assert read_checkpoint(tmp_path).class_names is None


def test_vit_model_pooler_is_pre_logits(tmp_path):
    reference = hf_model(transformers.ViTModel, seed=2, pooler_output_size=32, **SMALL)
    reference.save_pretrained(tmp_path)
    model = vitkit.load(tmp_path).eval()
    assert model.config.num_classes == 0 and model.config.representation_size == 32
    with torch.no_grad():
        assert relative_error(model(images(40)), reference(images(40)).pooler_output) <= 1e-4


def test_layer_norm_eps_comes_from_the_config(tmp_path):
    reference = hf_model(transformers.ViTForImageClassification, seed=3, layer_norm_eps=0.5, num_labels=4, **SMALL)
    reference.save_pretrained(tmp_path)
    model = vitkit.load(tmp_path).eval()
    assert model.config.layer_norm_eps == 0.5
    with torch.no_grad():
        want = reference(images(40)).logits
        assert relative_error(model(images(40)), want) <= 1e-4
        # The eps matters at this size: vitkit's default would not match.
        assert relative_error(vitkit.load(tmp_path, layer_norm_eps=1e-6).eval()(images(40)), want) > 1e-3


def test_new_resolution_matches_interpolate_pos_encoding(tmp_path, caplog):
    reference = hf_model(transformers.ViTModel, seed=4, **SMALL)
    reference.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="vitkit.checkpoints.adapt"):
        model = vitkit.create_model(pretrained=tmp_path, img_size=56).eval()
    assert len([r for r in caplog.records if r.name == "vitkit.checkpoints.adapt"]) == 1
    assert "5x5 grid (40x40 px) to 7x7 (56x56 px)" in caplog.text
    with torch.no_grad():
        want = reference(images(56), interpolate_pos_encoding=True).pooler_output
        assert relative_error(model(images(56)), want) <= 1e-4


def test_new_classes_zero_the_head(tmp_path, caplog):
    hf_model(transformers.ViTForImageClassification, num_labels=3, **SMALL).save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="vitkit.checkpoints.adapt"):
        model = vitkit.create_model(pretrained=tmp_path, num_classes=10, img_size=48)
    assert "head re-initialised (zeros) for 10 classes (was 3)" in caplog.text and "resampled" in caplog.text
    assert torch.count_nonzero(model.head.weight) == 0 and model.class_names is None


def test_pytorch_model_bin_and_in_memory_names(tmp_path):
    reference = hf_model(transformers.ViTForImageClassification, seed=5, num_labels=3, **SMALL)
    reference.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    # transformers 5 names modules `layers.N.attention.q_proj` in memory; the hub files use the older names.
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    assert any(".q_proj." in key for key in reference.state_dict())
    with torch.no_grad():
        assert relative_error(vitkit.load(tmp_path).eval()(images(40)), reference(images(40)).logits) <= 1e-4


def test_sharded_safetensors(tmp_path):
    reference = hf_model(transformers.ViTModel, seed=8, **SMALL)
    reference.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    with torch.no_grad():
        assert relative_error(vitkit.load(tmp_path).eval()(images(40)), reference(images(40)).pooler_output) <= 1e-4


def edit_config(path, **changes) -> None:
    """Change fields of a saved config.json."""
    document = json.loads((path / "config.json").read_text())
    document.update(changes)
    (path / "config.json").write_text(json.dumps(document))


@pytest.mark.parametrize("hidden_act", ["gelu_new", "gelu_pytorch_tanh"])
def test_tanh_gelu_configs_load_as_gelu_tanh(tmp_path, hidden_act):
    reference = hf_model(transformers.ViTForImageClassification, seed=8, hidden_act=hidden_act, num_labels=3, **SMALL)
    reference.save_pretrained(tmp_path)
    x = images(40)
    with torch.no_grad():
        want = reference(x).logits
        loaded = vitkit.load(tmp_path).eval()
        exact = vitkit.load(tmp_path, activation="gelu").eval()
    assert loaded.config.activation == "gelu_tanh"
    with torch.no_grad():
        assert relative_error(loaded(x), want) <= 1e-5
        assert relative_error(exact(x), want) > 1e-5  # the tolerance tells the two GELUs apart


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported; vitkit's MLP uses exact"),
        ({"model_type": "swin"}, "model_type 'swin' is not supported"),
        ({"pooler_act": "relu"}, "pooler_act 'relu' is not supported"),
        ({"hidden_size": 32}, "config.json gives hidden_dim=32 but the weights have 64"),
        ({"image_size": 48}, "position embedding has 26 entries, but a 48x48 image"),
    ],
)
def test_unsupported_or_inconsistent_config(tmp_path, changes, message):
    hf_model(transformers.ViTForImageClassification, num_labels=3, **SMALL).save_pretrained(tmp_path)
    edit_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=message):
        read_checkpoint(tmp_path)


def test_corrupt_directory_files_are_named(tmp_path):
    hf_model(transformers.ViTForImageClassification, num_labels=3, **SMALL).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"model\.safetensors.*truncated or corrupt"):
        read_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "vit", "hidden')
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        read_checkpoint(tmp_path)


def test_bare_hf_weights_file_asks_for_the_directory(tmp_path):
    hf_model(transformers.ViTModel, **SMALL).save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="pass the directory that holds them together with their config.json"):
        read_checkpoint(tmp_path / "hf" / "model.safetensors")


def test_convert_keeps_class_names(tmp_path, capsys):
    labels = {0: "cat", 1: "dog", 2: "bird"}
    reference = hf_model(transformers.ViTForImageClassification, seed=6, id2label=labels, **SMALL)
    reference.save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "native")]) == 0
    assert "wrote" in capsys.readouterr().out
    converted = read_checkpoint(tmp_path / "native")
    assert converted.format == "vitkit" and converted.class_names == ["cat", "dog", "bird"]
    assert converted.config.layer_norm_eps == 1e-12 and converted.config.extra["source_format"] == "hf"
    with torch.no_grad():
        got = vitkit.load(tmp_path / "native").eval()(images(40))
        assert relative_error(got, reference(images(40)).logits) <= 1e-4
