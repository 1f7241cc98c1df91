"""Hub ids (never touching the network) and `vitkit convert` end to end."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import errors
from safetensors.torch import save_file

import vitkit
from vitkit.checkpoints import hub, read_checkpoint
from vitkit.checkpoints.hub import HubUnavailableError
from vitkit.cli.main import main
from vitkit.models import VisionTransformer, ViTConfig


def random_vit(seed: int = 0, **fields) -> VisionTransformer:
    """A tiny ViT with O(1) random parameters (the default init zeroes the head, hiding mapping bugs)."""
    torch.manual_seed(seed)
    config = {"img_size": 32, "patch_size": 8, "hidden_dim": 64, "depth": 2, "num_heads": 4, "mlp_dim": 128}
    model = VisionTransformer(ViTConfig(**{**config, "num_classes": 5, **fields}))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, param[0].numel() ** -0.5 if param.ndim >= 2 else 0.1)
    return model.eval()


def timm_state(model: VisionTransformer) -> dict[str, torch.Tensor]:
    """vitkit -> timm names (timm calls the learned position table `pos_embed`)."""
    return {("pos_embed" if k == "pos_embed.weight" else k): v.clone() for k, v in model.state_dict().items()}


def logits(model: VisionTransformer, size: int = 32) -> torch.Tensor:
    """Eval logits of a fixed batch."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return model.eval()(x)


# --- hub ------------------------------------------------------------------------------------------------------


def http_error(cls: type[Exception], message: str) -> Exception:
    """A huggingface_hub HTTP error without an HTTP response (its constructor wants one from its HTTP client)."""
    error = cls.__new__(cls)
    error.args = (message,)
    return error


def fake_hub(monkeypatch, files: dict[str, dict[str, Path]]) -> list[tuple[str, str]]:
    """Replace hf_hub_download by a lookup in `files` (repo -> filename -> local path); records the calls."""
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        if repo_id not in files:
            raise http_error(errors.RepositoryNotFoundError, f"{repo_id} not found")
        if filename not in files[repo_id]:
            raise http_error(errors.RemoteEntryNotFoundError, f"{filename} not in {repo_id}")
        return str(files[repo_id][filename])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def test_timm_id_downloads_timm_repo(tmp_path, monkeypatch):
    model = random_vit()
    (tmp_path / "snapshot").mkdir()
    save_file(timm_state(model), tmp_path / "snapshot" / "model.safetensors")
    (tmp_path / "snapshot" / "config.json").write_text(
        '{"architecture": "vit_tiny", "num_classes": 5, "label_names": ["a", "b", "c", "d", "e"]}'
    )
    snapshot = {name: tmp_path / "snapshot" / name for name in ("model.safetensors", "config.json")}
    calls = fake_hub(monkeypatch, {"timm/vit_tiny.test_tag": snapshot})
    checkpoint = read_checkpoint("timm:vit_tiny.test_tag", num_heads=4)
    assert calls[0] == ("timm/vit_tiny.test_tag", "config.json")
    assert checkpoint.format == "timm" and checkpoint.origin == "timm:vit_tiny.test_tag"
    assert checkpoint.class_names == ["a", "b", "c", "d", "e"]
    torch.testing.assert_close(
        logits(vitkit.create_model(pretrained="timm:vit_tiny.test_tag", num_heads=4)), logits(model)
    )


def test_hf_hub_id_without_config_reads_the_weights_file(tmp_path, monkeypatch):
    model = random_vit()
    save_file(timm_state(model), tmp_path / "model.safetensors")
    fake_hub(monkeypatch, {"someone/vit": {"model.safetensors": tmp_path / "model.safetensors"}})
    assert read_checkpoint("hf-hub:someone/vit", num_heads=4).format == "timm"


def test_unknown_repo_says_timm_ids_need_a_tag(monkeypatch):
    fake_hub(monkeypatch, {})
    with pytest.raises(ValueError, match=r"timm/vit_base_patch16_224 was not found.*need the pretrained tag"):
        read_checkpoint("timm:vit_base_patch16_224")


def test_network_failure_says_which_file_to_fetch(monkeypatch):
    def unreachable(repo_id, filename, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(HubUnavailableError) as caught:
        vitkit.create_model(pretrained="timm:vit_base_patch16_224.augreg2_in21k_ft_in1k")
    message = str(caught.value)
    assert "https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k/resolve/main/model.safetensors" in (
        message
    )
    assert "--pretrained /path/to/model.safetensors" in message and "Failed to resolve" in message


def test_an_http_client_error_means_unreachable_and_keeps_its_cause(monkeypatch):
    client_error = hub.unreachable_errors()[-1]  # the HTTP client's HTTPError (timeouts, refused connections)

    def timed_out(repo_id, filename, **kwargs):
        raise client_error("The read operation timed out")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", timed_out)
    with pytest.raises(HubUnavailableError, match="timed out") as caught:
        vitkit.create_model(pretrained="timm:vit_base_patch16_224.augreg2_in21k_ft_in1k")
    assert isinstance(caught.value.__cause__, client_error)


def test_a_bug_in_the_download_is_not_reported_as_the_hub_being_unreachable(monkeypatch):
    def broken(repo_id, filename, **kwargs):
        raise TypeError("hf_hub_download() got an unexpected keyword argument")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", broken)
    with pytest.raises(TypeError, match="unexpected keyword"):
        vitkit.create_model(pretrained="timm:vit_base_patch16_224.augreg2_in21k_ft_in1k")


def test_hf_hub_offline_uses_only_the_cache(monkeypatch, tmp_path):
    # The real download function, told to stay offline: it must look in the (empty) cache only.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen = {}
    real = huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kwargs):
        seen.update(kwargs)
        return real(repo_id, filename, cache_dir=tmp_path, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    with pytest.raises(HubUnavailableError, match=r"google/vit-not-cached/resolve/main/model\.safetensors") as caught:
        read_checkpoint("hf-hub:google/vit-not-cached")
    assert seen["local_files_only"] is True
    assert isinstance(caught.value.__cause__, errors.LocalEntryNotFoundError)


def test_malformed_hub_id():
    with pytest.raises(ValueError, match="is not a hub id"):
        hub.download("hf-hub:no-owner")


def test_cli_reports_offline_hub_cleanly(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raise_offline)
    assert main(["convert", "timm:vit_small_patch16_224.augreg_in21k", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("vitkit convert: error: cannot download timm:vit_small_patch16_224.augreg_in21k")
    assert not (tmp_path / "out").exists()


def _raise_offline(repo_id, filename, **kwargs):
    raise errors.OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled")


# --- vitkit convert ---------------------------------------------------------------------------------------------


def test_convert_timm_file_to_native(tmp_path, capsys):
    model = random_vit()
    torch.save({"model": timm_state(model)}, tmp_path / "vit.pth")
    assert main(["convert", str(tmp_path / "vit.pth"), str(tmp_path / "native"), "--model", "mu/8"]) == 2
    assert "hidden_dim=64 but model 'mu/8' has 128" in capsys.readouterr().err

    # The timm file does not show the head count and timm has no 64-wide models: vitkit asks, never guesses.
    assert main(["convert", str(tmp_path / "vit.pth"), str(tmp_path / "native")]) == 2
    assert "width 64 is not one timm releases models at" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "vit.pth"), str(tmp_path / "native"), "--num-heads", "4"]) == 0
    assert "wrote" in capsys.readouterr().out
    converted = read_checkpoint(tmp_path / "native")
    assert converted.format == "vitkit" and converted.config.extra["source_format"] == "timm"
    assert converted.config.num_heads == 4
    torch.testing.assert_close(logits(vitkit.load(tmp_path / "native")), logits(model))


def test_convert_with_model_name_new_size_and_classes(tmp_path, capsys):
    model = random_vit(hidden_dim=128, depth=6, mlp_dim=512, num_heads=2)  # "mu" in the variant table
    save_file(timm_state(model), tmp_path / "mu.safetensors")
    argv = ["convert", str(tmp_path / "mu.safetensors"), str(tmp_path / "native")]
    assert main([*argv, "--model", "mu/8", "--num-classes", "7", "--img-size", "48"]) == 0
    assert "48x48 px, 7 classes" in capsys.readouterr().out
    converted = vitkit.load(tmp_path / "native")
    assert converted.config.num_classes == 7 and converted.config.img_size == (48, 48)
    assert converted.config.name == "mu/8" and converted.config.num_heads == 2
    assert torch.count_nonzero(converted.head.weight) == 0
    same = vitkit.create_model(pretrained=tmp_path / "mu.safetensors", num_classes=7, img_size=48, num_heads=2)
    torch.testing.assert_close(logits(converted, 48), logits(same, 48))


def test_convert_round_trips_logits(tmp_path):
    model = random_vit()
    save_file(timm_state(model), tmp_path / "vit.safetensors")
    assert main(["convert", str(tmp_path / "vit.safetensors"), str(tmp_path / "a"), "--num-heads", "4"]) == 0
    # A native directory converts too (e.g. to change classes); here unchanged, so logits match exactly.
    assert main(["convert", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    torch.testing.assert_close(logits(vitkit.load(tmp_path / "b")), logits(vitkit.load(tmp_path / "a")))


def test_convert_refuses_to_replace_a_foreign_directory(tmp_path, capsys):
    torch.save(timm_state(random_vit()), tmp_path / "vit.pth")
    (tmp_path / "important").mkdir()
    (tmp_path / "important" / "notes.txt").write_text("keep me")
    assert main(["convert", str(tmp_path / "vit.pth"), str(tmp_path / "important")]) == 2
    assert "exists and is not a vitkit checkpoint" in capsys.readouterr().err
    assert (tmp_path / "important" / "notes.txt").read_text() == "keep me"


def test_convert_reports_corrupt_source(tmp_path, capsys):
    save_file(timm_state(random_vit()), tmp_path / "vit.safetensors")
    data = (tmp_path / "vit.safetensors").read_bytes()
    (tmp_path / "vit.safetensors").write_bytes(data[: len(data) // 3])
    assert main(["convert", str(tmp_path / "vit.safetensors"), str(tmp_path / "out")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Belt and braces: a test reaching the real hub by mistake reads the local cache only, never the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
