"""End-to-end training on tiny data (seconds): run directory, eval, predict, divergence, refusals."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import vitkit
from vitkit.cli.main import main
from vitkit.training import load_config, train
from vitkit.training import objectives as objectives_module
from vitkit.training.metrics import read_metrics

# A 2-block, 32-wide ViT on 120 digits at 16 px: 6 steps of 16 images per epoch.
TINY = [
    "--data", "digits", "--limit-per-class", "12", "--img-size", "16", "--model", "mu/4", "--hidden-dim", "32",
    "--depth", "2", "--num-heads", "2", "--mlp-dim", "64", "--batch-size", "16", "--threads", "1", "--no-progress",
    "--precision", "fp32", "--warmup-steps", "2", "--lr", "0.003",
]  # fmt: skip
SUMMARY_KEYS = {
    "val_top1", "val_top5", "best_epoch", "epochs", "wall_s", "train_images_per_s", "skipped_files", "data_wait_share",
}  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2-epoch run with EMA and gradient accumulation, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("train") / "run"
    argv = ["train", *TINY, "--epochs", "2", "--ema-decay", "0.9", "--grad-accum", "2", "--out", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three held-out digits as PNG files."""
    from vitkit.cli.demo import save_samples

    return [str(p) for p in save_samples(tmp_path_factory.mktemp("digits"), count=3)]


def test_run_directory_has_everything(run_dir: Path) -> None:
    config = load_config(run_dir / "config.yaml")
    assert config.run.epochs == 2 and config.optim.ema_decay == 0.9 and config.model.overrides["hidden_dim"] == 32
    rows = read_metrics(run_dir / "metrics.csv")
    assert [r["step"] for r in rows if r["kind"] == "step"] == [str(i) for i in range(1, 13)]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == ["1", "2"]
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["status"] == "finished" and summary["epochs"] == 2 and summary["skipped_files"] == []
    assert 0 <= summary["val_top1"] <= 100 and summary["val_top5"] >= summary["val_top1"]
    assert 0 <= summary["data_wait_share"] < 1 and summary["train_images_per_s"] > 0
    for name in ("best", "last", "ema"):
        model = vitkit.load(run_dir / "checkpoints" / name)
        assert model.class_names == [str(d) for d in range(10)] and model.config.hidden_dim == 32
    assert (run_dir / "checkpoints" / "last" / "training_state.pt").is_file()
    best = json.loads((run_dir / "checkpoints" / "best" / "config.json").read_text())["metadata"]
    assert best["val_top1"] == summary["val_top1"] and best["weights"] == summary["best_weights"]


def test_eval_reports_accuracy_per_class_and_confusion(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", str(run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert report["top1"] == pytest.approx(summary["val_top1"], abs=1e-3)  # the held-out split, as in training
    assert report["images"] == summary["val_images"] and set(report["per_class"]) == {str(d) for d in range(10)}
    assert sum(map(sum, report["confusion_matrix"])) == summary["val_images"]
    assert Path(report["confusion_png"]).read_bytes()[:4] == b"\x89PNG"
    assert main(["eval", str(run_dir / "checkpoints" / "last"), "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "top-1" in text and "per-class accuracy" in text and "confusion matrix:" in text


def test_eval_with_test_time_augmentation(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from vitkit.inference import evaluate_checkpoint

    assert main(["eval", str(run_dir), "--tta", "multicrop", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    direct = evaluate_checkpoint(run_dir, tta="multicrop", keep_logits=True).result
    assert report["tta"] == "multicrop" and report["top1"] == pytest.approx(direct.top1)
    plain = evaluate_checkpoint(run_dir, keep_logits=True).result
    assert plain.logits.shape == direct.logits.shape and not torch.allclose(plain.logits, direct.logits)


def test_eval_refuses_other_classes(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name in ("cat", "dog"):
        for split in ("train", "val"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / split / name / "a.png")
    assert main(["eval", str(run_dir), "--data", str(tmp_path)]) == 2
    assert "do not match those" in capsys.readouterr().err


def test_predict_prints_top_k(run_dir: Path, digit_files: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", str(run_dir), *digit_files, "--top-k", "3"]) == 0
    ran, *lines = capsys.readouterr().out.strip().splitlines()
    assert ran.endswith(": torch on cpu, fp32") or ran.endswith(": torch on cpu, bf16")
    assert len(lines) == 3 and all(
        line.startswith(path) and line.count("%") == 3 for line, path in zip(lines, digit_files, strict=True)
    )


def test_predict_names_bad_files_and_exits_2(
    run_dir: Path, digit_files: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    missing = tmp_path / "missing.png"
    assert main(["predict", str(run_dir), digit_files[0], str(broken), str(missing), "--json"]) == 2
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [p["path"] for p in report["predictions"]] == [digit_files[0]]
    top = report["predictions"][0]["top_k"]
    assert len(top) == 5 and sum(t["probability"] for t in top) <= 1.0 + 1e-6
    assert {e["path"] for e in report["errors"]} == {str(broken), str(missing)}
    assert f"{broken}: not an image" in captured.err and f"{missing}: no such file" in captured.err


def test_a_non_finite_loss_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls = {"n": 0}

    def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, **kwargs) -> torch.Tensor:
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(logits, targets, **kwargs)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(objectives_module, "F", types.SimpleNamespace(cross_entropy=cross_entropy))
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--save-every", "2", "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "non-finite at step 4" in error and "--lr" in error and "checkpoints/last" in error
    last = json.loads((out / "checkpoints" / "last" / "config.json").read_text())["metadata"]
    assert last["step"] == 2  # the last good checkpoint is kept
    vitkit.load(out / "checkpoints" / "last")
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


def test_gradient_accumulation_matches_one_batch(tmp_path: Path) -> None:
    base = load_config(overrides={"data.limit_per_class": 6, "data.img_size": 16, "model.hidden_dim": 32,
                                  "model.depth": 1, "model.num_heads": 2, "model.mlp_dim": 32, "run.epochs": 1,
                                  "run.batch_size": 16, "runtime.precision": "fp32", "runtime.threads": 1})  # fmt: skip
    weights = []
    for accum in (1, 4):
        config = base.replace({"run.grad_accum": accum})
        train(config, tmp_path / f"accum{accum}", progress_bar=False)
        weights.append(vitkit.load(tmp_path / f"accum{accum}" / "checkpoints" / "last").state_dict())
    for name, tensor in weights[0].items():
        torch.testing.assert_close(tensor, weights[1][name], rtol=1e-4, atol=1e-5, msg=name)


def test_refusals_say_what_to_do(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def refused(argv: list[str], message: str) -> None:
        assert main(argv) == 2
        assert re.search(message, capsys.readouterr().err), message

    refused(["train", *TINY, "--out", str(run_dir)], "already exists.*--overwrite.*--resume")
    refused(["train", "--resume", str(run_dir), "--lr", "0.5"], r"would change it: optim\.lr")
    refused(["train", "--resume", str(tmp_path)], "is not a training run")
    refused(["train", *TINY, "--batch-size", "512", "--out", str(tmp_path / "x")], "fewer than one batch")
    refused(["train", *TINY, "--precision", "fp16", "--device", "cpu", "--out", str(tmp_path / "y")],
            "fp16 needs a CUDA device")  # fmt: skip
    assert not (tmp_path / "y").exists()  # refused before anything is written
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    refused(["train", *TINY, "--overwrite", "--out", str(tmp_path / "notes")], "not empty")
    assert (tmp_path / "notes" / "keep.txt").exists()  # --overwrite never deletes a folder that is not a run
    refused(["predict", str(tmp_path / "nowhere"), "a.png"], "does not exist")
    refused(["eval", str(tmp_path / "notes")], "neither a run directory")


def test_config_yaml_is_a_recipe(run_dir: Path) -> None:
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert list(saved) == ["model", "data", "augment", "optim", "run", "objective", "runtime"]
    assert load_config(run_dir / "config.yaml").to_dict() == saved
