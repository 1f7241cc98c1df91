"""`vitkit push`: the staged files and model card, and every way the upload can fail, with the hub stubbed at the
`huggingface_hub` API boundary (HfApi, get_token); nothing touches the network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from huggingface_hub import errors
from PIL import Image

import vitkit
from vitkit.cli.main import main
from vitkit.export.push import HubPushError, push

CLASSES = ["cat", "dog", "bird"]
SUMMARY = {"val_top1": 87.5, "val_top5": 99.25, "best_epoch": 9, "epochs": 10, "wall_s": 61.2, "precision": "bf16"}
RECIPE = "data:\n  path: ../shared/data/pets\n  img_size: 32\noptim:\n  lr: 0.001\n"


class FakeApi:
    """HfApi with create_repo / upload_folder recorded; the uploaded folder is copied before it is deleted."""

    calls: list = []
    fail_with: BaseException | None = None

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, self.token, kwargs))
        if FakeApi.fail_with is not None:
            raise FakeApi.fail_with
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        FakeApi.calls.append(("upload_folder", repo_id, self.token, kwargs))
        shutil.copytree(folder_path, FakeApi.uploaded)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The stubbed hub: FakeApi, no stored token, HF_HUB_OFFLINE unset; `hub.uploaded` is what was pushed."""
    FakeApi.calls, FakeApi.fail_with, FakeApi.uploaded = [], None, tmp_path / "uploaded"
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return FakeApi


def run_dir(tmp_path: Path) -> Path:
    """A finished run: checkpoints/best (with a training-state file), config.yaml, summary.json, curves.png."""
    torch.manual_seed(0)
    model = vitkit.create_model("Mini/4", img_size=32, depth=1, num_classes=3, zero_init_head=False)
    run = tmp_path / "runs" / "pets"
    metadata = {"precision": "bf16", "data": {"img_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}}
    vitkit.save(model, run / "checkpoints" / "best", class_names=CLASSES, metadata=metadata, extra_files={"s.pt": 1})
    (run / "config.yaml").write_text(RECIPE)
    (run / "summary.json").write_text(json.dumps(SUMMARY))
    Image.new("RGB", (8, 8)).save(run / "curves.png")
    return run


def test_push_uploads_the_checkpoint_the_run_files_and_a_card(tmp_path, hub, capsys):
    run = run_dir(tmp_path)
    assert main(["push", str(run), "alice/vit-pets", "--token", "hf_x", "--private"]) == 0
    assert "pushed" in capsys.readouterr().out
    assert hub.calls[0] == (
        "create_repo",
        "alice/vit-pets",
        "hf_x",
        {"private": True, "exist_ok": True, "repo_type": "model"},
    )
    assert hub.calls[1][:3] == ("upload_folder", "alice/vit-pets", "hf_x")
    files = sorted(p.name for p in hub.uploaded.iterdir())
    assert files == ["README.md", "config.json", "config.yaml", "curves.png", "model.safetensors", "summary.json"]
    pushed = vitkit.load(hub.uploaded)  # what hf-hub:alice/vit-pets resolves to loads as the run's best model
    torch.testing.assert_close(pushed.state_dict(), vitkit.load(run / "checkpoints" / "best").state_dict())
    card = (hub.uploaded / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: vitkit\npipeline_tag: image-classification\n")
    for expected in (
        "- training data: `../shared/data/pets`",
        "- 3 classes: cat, dog, bird",
        "mean [0.5, 0.5, 0.5], std [0.25, 0.25, 0.25]",
        "| best val top-1 (%) | 87.50 |",
        "| best epoch / epochs | 9 / 10 |",
        "| precision | bf16 |",
        "![training curves](curves.png)",
        "  lr: 0.001",
        "vitkit train --config config.yaml --out runs/pets",
        'vitkit.create_model(pretrained="hf-hub:alice/vit-pets")',
        "vitkit predict hf-hub:alice/vit-pets image.jpg",
    ):
        assert expected in card, expected


def test_push_to_hf_uploads_the_transformers_directory(tmp_path, hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_saved")  # `hf auth login`'s token
    push(run_dir(tmp_path), "alice/vit-pets", to="hf")
    assert hub.calls[0][2] == "hf_saved"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= {
        p.name for p in hub.uploaded.iterdir()
    }
    assert json.loads((hub.uploaded / "config.json").read_text())["id2label"] == {"0": "cat", "1": "dog", "2": "bird"}
    card = (hub.uploaded / "README.md").read_text()
    assert (
        "library_name: transformers" in card
        and 'AutoModelForImageClassification.from_pretrained("alice/vit-pets")' in card
    )


def test_a_checkpoint_without_its_run_gets_a_card_without_results(tmp_path, hub):
    model = vitkit.create_model("Mini/4", img_size=32, depth=1, num_classes=3)
    push(vitkit.save(model, tmp_path / "ckpt"), "alice/bare", token="t")
    card = (hub.uploaded / "README.md").read_text()
    assert "no results recorded" in card and "## Recipe" not in card
    assert sorted(p.name for p in hub.uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_no_token_says_how_to_log_in(tmp_path, hub, capsys):
    assert main(["push", str(tmp_path), "alice/x"]) == 2
    assert (
        "no Hugging Face token: log in with `hf auth login`, set HF_TOKEN, or pass --token" in capsys.readouterr().err
    )
    assert hub.calls == []


def test_offline_says_to_unset_hf_hub_offline(tmp_path, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", str(tmp_path), "alice/x", "--token", "t"]) == 2
    assert "HF_HUB_OFFLINE is set, and pushing needs the network" in capsys.readouterr().err


def test_a_repo_id_needs_an_owner(tmp_path, hub, capsys):
    assert main(["push", str(tmp_path), "just-a-name", "--token", "t"]) == 2
    assert "'just-a-name' is not a hub repository; give OWNER/NAME" in capsys.readouterr().err


def test_network_failure_is_a_clear_error_with_its_cause(tmp_path, hub):
    cause = errors.OfflineModeIsEnabled("cannot reach huggingface.co")  # a ConnectionError, as a dropped link
    hub.fail_with = cause
    with pytest.raises(HubPushError, match="could not reach the hub to push alice/x") as raised:
        push(run_dir(tmp_path), "alice/x", token="t")
    assert raised.value.__cause__ is cause


def http_error(status: int) -> errors.HfHubHTTPError:
    """A huggingface_hub HTTP error with only a status code (its constructor wants a full HTTP response)."""
    error = errors.HfHubHTTPError.__new__(errors.HfHubHTTPError)
    error.args = (f"{status} Client Error",)
    error.response = SimpleNamespace(status_code=status)
    return error


def test_a_rejected_token_says_to_log_in_again(tmp_path, hub):
    hub.fail_with = http_error(401)
    with pytest.raises(HubPushError, match=r"the hub refused the token \(401\)") as raised:
        push(run_dir(tmp_path), "alice/x", token="bad")
    assert raised.value.__cause__ is hub.fail_with


def test_no_write_access_names_the_namespace(tmp_path, hub):
    hub.fail_with = http_error(403)
    with pytest.raises(HubPushError, match=r"may not write to acme/x \(403\): use a token with write access to acme"):
        push(run_dir(tmp_path), "acme/x", token="t")
