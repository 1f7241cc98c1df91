"""DeiT distillation: losses against their formulas, the frozen teacher, tiny runs on digits, errors, eval, analyze."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitkit
from vitkit.analysis import analyze_checkpoint
from vitkit.analysis.attention import rollout_map
from vitkit.analysis.embeddings import token_cosine
from vitkit.cli.main import main
from vitkit.inference import Preprocessing
from vitkit.models import VisionTransformer, ViTConfig
from vitkit.training import Distillation, TeacherInputs, load_config, train
from vitkit.training import trainer as trainer_module
from vitkit.training.config import build_objective
from vitkit.training.distill import (
    DistillSettings,
    hard_distillation_loss,
    load_teacher,
    soft_distillation_loss,
    teacher_inputs,
)
from vitkit.training.objectives import Batch
from vitkit.training.state import load_training_state

# A 2-block, 32-wide DeiT student (class + distillation token) on 120 digits at 16 px: 6 steps per epoch.
TINY = [
    "--data", "digits", "--limit-per-class", "12", "--img-size", "16", "--model", "mu/4", "--hidden-dim", "32",
    "--depth", "2", "--num-heads", "2", "--mlp-dim", "64", "--pool", "token", "--distilled", "--batch-size", "16",
    "--threads", "1", "--no-progress", "--precision", "fp32", "--warmup-steps", "2", "--lr", "0.003", "--epochs", "1",
]  # fmt: skip
DIGITS = [str(d) for d in range(10)]


def convnet_teacher(path: Path, num_classes: int = 10, **data: object) -> Path:
    """A tiny untrained resnet20 (width 4) saved as a native checkpoint; `data` goes to its metadata."""
    torch.manual_seed(1)
    model = vitkit.create_model("resnet20", num_classes=num_classes, img_size=16, width=4)
    names = DIGITS if num_classes == 10 else None
    return vitkit.save(model, path, class_names=names, metadata={"data": data} if data else None)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits teacher, recording the digits' preprocessing (16 px, mean/std 0.5)."""
    return convnet_teacher(tmp_path_factory.mktemp("teacher") / "ckpt", img_size=16, mean=[0.5] * 3, std=[0.5] * 3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, teacher_dir: Path) -> Path:
    """One epoch of hard distillation from the ConvNet teacher, through the command line."""
    out = tmp_path_factory.mktemp("distill") / "run"
    assert main(["train", *TINY, "--teacher", str(teacher_dir), "--out", str(out)]) == 0
    return out


# --- the losses --------------------------------------------------------------------------------------------


def logits(seed: int, batch: int = 4, classes: int = 5) -> torch.Tensor:
    """Fixed random logits."""
    return torch.randn(batch, classes, generator=torch.Generator().manual_seed(seed)) * 3


def test_hard_loss_is_cross_entropy_against_the_teacher_argmax() -> None:
    student, teacher = logits(0), logits(1)
    labels = teacher.argmax(1)
    direct = -(student.softmax(1)[torch.arange(4), labels]).log().mean()
    torch.testing.assert_close(hard_distillation_loss(student, teacher), direct)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_soft_loss_is_deit_kl_times_tau_squared_over_the_logit_count(tau: float) -> None:
    student, teacher = logits(0), logits(1)
    p_teacher, p_student = (teacher / tau).softmax(1), (student / tau).softmax(1)
    kl = (p_teacher * (p_teacher.log() - p_student.log())).sum()
    torch.testing.assert_close(soft_distillation_loss(student, teacher, tau), kl * tau**2 / student.numel())
    assert soft_distillation_loss(teacher, teacher, tau).abs() < 1e-6


class Linear(nn.Module):
    """A teacher on flattened 16x16 images that records how it was called."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, classes)
        self.calls: list[tuple[bool, torch.Tensor]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, images.detach().clone()))
        return self.fc(images.flatten(1))


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_step_loss_combines_class_head_on_targets_and_dist_head_on_teacher(tiny_config: ViTConfig, kind: str) -> None:
    student = VisionTransformer(tiny_config.replace(distilled=True))
    teacher = Linear()
    objective = Distillation(teacher, kind, alpha=0.3, tau=2.0)
    images = torch.randn(4, 3, 16, 16)
    targets = F.one_hot(torch.tensor([0, 1, 2, 3]), 5).float() * 0.9 + 0.02  # smoothed
    out = objective(student, Batch(images, targets, targets.argmax(1)))
    heads = student.forward_heads(student.forward_features(images))
    with torch.no_grad():
        t = teacher.fc(images.flatten(1))
    dist = hard_distillation_loss(heads["dist"], t) if kind == "hard" else soft_distillation_loss(heads["dist"], t, 2)
    expected = 0.7 * F.cross_entropy(heads["cls"], targets) + 0.3 * dist
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert teacher.fc.weight.grad is None and not teacher.fc.weight.requires_grad
    assert student.head_dist.weight.grad is not None and student.head.weight.grad is not None
    assert set(out.metrics) == set(Distillation.train_metrics) and 0 <= out.metrics["agree"] <= 100


def test_teacher_is_no_part_of_the_objective_module() -> None:
    objective = Distillation(Linear())
    assert list(objective.parameters()) == [] and objective.state_dict() == {}
    objective.train()
    assert not objective.teacher.training


# --- what the teacher is fed -----------------------------------------------------------------------------


def test_teacher_inputs_renormalise_and_resize() -> None:
    pixels = torch.rand(2, 3, 16, 16)
    student_mean, student_std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    batch = (pixels - torch.tensor(student_mean).view(1, 3, 1, 1)) / torch.tensor(student_std).view(1, 3, 1, 1)
    inputs = TeacherInputs(student_mean, student_std, mean, std, img_size=8)
    expected = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    expected = F.interpolate(expected, size=(8, 8), mode="bilinear", antialias=True)
    torch.testing.assert_close(inputs(batch), expected)
    same = TeacherInputs(student_mean, student_std, student_mean, student_std, img_size=16)
    assert same(batch) is batch  # nothing to convert: the very same tensor


def test_teacher_checkpoint_metadata_sets_its_inputs(tmp_path: Path) -> None:
    ckpt = convnet_teacher(tmp_path / "t", img_size=8, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    config = load_config(None, {"objective.distill.teacher": str(ckpt), "model.distilled": True, "model.pool": "token"})
    student = vitkit.create_model(config.model.name, num_classes=10, img_size=16, **config.model.overrides)
    student.class_names = DIGITS
    objective = build_objective(config, student, 10)
    assert objective.inputs == TeacherInputs((0.5,) * 3, (0.5,) * 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 8)
    images = torch.randn(2, 3, 16, 16)
    logits = objective.teacher_logits(images)
    torch.testing.assert_close(logits, objective.teacher(objective.inputs(images)))
    assert logits.shape == (2, 10)


def test_teacher_without_recorded_normalisation_takes_the_students() -> None:
    prep = Preprocessing(img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, source="default (no metadata): x")
    assert teacher_inputs(prep, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)) == TeacherInputs(
        (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 32
    )


def test_timm_teacher_is_built_by_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    built = []

    def create_model(name: str, pretrained: bool) -> nn.Module:
        built.append((name, pretrained))
        model = Linear()
        model.pretrained_cfg = {"input_size": (3, 16, 16), "mean": (0.1, 0.2, 0.3), "std": (0.3, 0.2, 0.1)}
        return model

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    model, prep = load_teacher("timm:regnety_160.deit_in1k", torch.device("cpu"))
    assert built == [("regnety_160.deit_in1k", True)] and not model.training
    assert (prep.img_size, prep.mean, prep.std) == (16, (0.1, 0.2, 0.3), (0.3, 0.2, 0.1)) and prep.from_metadata


def test_timm_teacher_without_timm_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ValueError, match=r"timm:resnet50 is built by timm, which is not installed: pip install timm"):
        load_teacher("timm:resnet50", torch.device("cpu"))


# --- end to end -----------------------------------------------------------------------------------------------


def test_distillation_run_reports_each_head(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["objective"] == "distill" and summary["best_metric"] == "top1"
    assert {"val_top1", "val_top5", "val_top1_cls", "val_top1_dist"} <= set(summary)
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss_cls", "loss_dist", "agree", "val_top1_cls", "val_top1_dist"} <= set(header)
    config = load_config(run_dir / "config.yaml")
    assert config.objective.name == "distill" and config.objective.settings.teacher
    assert config.model.overrides["distilled"]
    model = vitkit.load(run_dir / "checkpoints" / "best")
    assert model.config.distilled and model.head_dist is not None
    assert load_training_state(run_dir / "checkpoints" / "last" / "training_state.pt")["objective"] == {}


def test_eval_reports_each_head_and_their_average(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", str(run_dir), "--heads", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(report["heads"]) == {"cls", "dist"}
    # The same weights on the same val split as the run's validation: the same numbers.
    assert report["top1"] == pytest.approx(summary["val_top1"], abs=1e-3)
    assert report["heads"]["cls"]["top1"] == pytest.approx(summary["val_top1_cls"], abs=1e-3)
    assert report["heads"]["dist"]["top1"] == pytest.approx(summary["val_top1_dist"], abs=1e-3)
    assert main(["eval", str(run_dir), "--heads"]) == 0
    assert "dist head alone: top-1" in capsys.readouterr().out


def test_teacher_stays_frozen_in_eval_mode_and_out_of_the_optimizer(
    tmp_path: Path, teacher_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher = vitkit.load(teacher_dir)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    seen, optimizers = [], []
    teacher.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    build = trainer_module.build_optimizer
    monkeypatch.setattr(trainer_module, "build_optimizer", lambda *a: optimizers.append(build(*a)) or optimizers[-1])
    config = load_config(
        None,
        {
            "data.path": "digits", "data.limit_per_class": 12, "data.img_size": 16, "model.name": "mu/4",
            "model.hidden_dim": 32, "model.depth": 2, "model.num_heads": 2, "model.mlp_dim": 64,
            "model.pool": "token", "model.distilled": True, "run.batch_size": 16, "run.epochs": 1,
            "runtime.threads": 1, "runtime.precision": "fp32", "optim.warmup_steps": 2,
        },
    )  # fmt: skip
    objective = Distillation(teacher, "soft", alpha=0.5, tau=2.0)
    teacher.train()  # as a caller might: the objective must put it back in eval mode at every step
    summary = train(config, tmp_path / "run", objective=objective)
    assert summary["objective"] == "distill" and summary["steps"] == 6
    assert len(seen) == 6 and not any(seen) and not teacher.training  # one call per step, always in eval mode
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key])  # BatchNorm statistics too: eval mode all along
    optimized = {id(p) for group in optimizers[0].param_groups for p in group["params"]}
    assert optimized and not optimized & {id(p) for p in teacher.parameters()}


# --- errors ------------------------------------------------------------------------------------------------------


def test_teacher_with_other_classes_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = convnet_teacher(tmp_path / "five", num_classes=5)
    assert main(["train", *TINY, "--teacher", str(ckpt), "--out", str(tmp_path / "run")]) == 2
    assert "the teacher predicts 5 classes but the data has 10" in capsys.readouterr().err


def test_teacher_with_classes_in_another_order_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = vitkit.create_model("resnet20", num_classes=10, img_size=16, width=4)
    ckpt = vitkit.save(model, tmp_path / "shuffled", class_names=DIGITS[::-1])
    assert main(["train", *TINY, "--teacher", str(ckpt), "--out", str(tmp_path / "run")]) == 2
    assert "its argmax would name the wrong classes" in capsys.readouterr().err


def test_distill_flag_without_a_teacher_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", *TINY, "--distill", "soft", "--out", str(tmp_path / "run")]) == 2
    assert "objective.distill.kind 'soft' needs a teacher to distil from: add --teacher CKPT" in capsys.readouterr().err


def test_distill_objective_without_a_teacher_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", *TINY, "--objective", "distill", "--out", str(tmp_path / "run")]) == 2
    assert "objective 'distill' needs a teacher: add --teacher CKPT" in capsys.readouterr().err


def test_student_without_distillation_token_is_refused(
    tmp_path: Path, teacher_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [*TINY, "--no-distilled", "--teacher", str(teacher_dir), "--out", str(tmp_path / "run")]
    assert main(["train", *argv]) == 2
    assert "has none: add --distilled" in capsys.readouterr().err


def test_unknown_distillation_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"objective.distill.kind must be one of \('hard', 'soft'\), got 'medium'"):
        load_config(None, {"objective.distill.teacher": "t", "objective.distill.kind": "medium"})
    with pytest.raises(ValueError, match=r"objective.distill.token must be one of \('dist', 'cls'\), got 'both'"):
        load_config(None, {"objective.distill.teacher": "t", "objective.distill.token": "both"})


# --- the distill section, and a fresh student -------------------------------------------------------------------

FRESH = [arg for arg in TINY if arg != "--distilled"]  # the same student, not asking for the token


def test_old_flat_distill_keys_translate_into_the_section(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recipe = tmp_path / "old.yaml"
    flat = "objective:\n  teacher: runs/t\n  distill: soft\n  distill_alpha: 0.3\n  distill_tau: 2\n"
    recipe.write_text("model:\n  pool: token\n" + flat)
    config = load_config(recipe)
    assert config.objective.name == "distill"
    assert config.objective.settings == DistillSettings(teacher="runs/t", kind="soft", alpha=0.3, tau=2.0)
    assert "objective.distill_alpha -> objective.distill.alpha" in caplog.text
    section = config.to_dict()["objective"]
    assert section == {"name": "distill", "distill": {"teacher": "runs/t", "kind": "soft", "alpha": 0.3, "tau": 2.0,
                                                      "token": "dist"}}  # fmt: skip
    rewritten = tmp_path / "new.yaml"
    rewritten.write_text(config.to_yaml())
    assert load_config(rewritten) == config


def test_a_teacher_means_distillation_and_no_other_objective() -> None:
    assert load_config(None, {"model.pool": "token", "objective.distill.teacher": "t"}).objective.name == "distill"
    with pytest.raises(ValueError, match=r"needs a class token beside it, and the student Mini/4 pools with 'gap'"):
        load_config(None, {"objective.distill.teacher": "t"})  # the default student pools by GAP
    with pytest.raises(ValueError, match=r"objective.distill.teacher is for objective 'distill', not 'mpp'"):
        load_config(None, {"objective.name": "mpp", "objective.distill.teacher": "t"})
    with pytest.raises(ValueError, match=r"unknown key objective.distil; valid keys of 'objective': name, distill"):
        load_config(None, {"objective.distil.teacher": "t"})


def test_fresh_student_gets_the_distillation_token(
    tmp_path: Path, teacher_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vitkit.training")
    flags = {"model.name": "Ti/4", "objective.distill.teacher": "t", "objective.distill.kind": "hard"}
    config = load_config(None, flags)
    assert config.model.overrides == {"distilled": True}  # what `--model Ti/4 --teacher t --distill hard` trains
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n  name: Ti/4\nobjective:\n  distill:\n    teacher: t\n")
    assert load_config(recipe).model.overrides["distilled"] is True
    assert "distilled" not in load_config(recipe, {"model.pretrained": "ckpt"}).model.overrides  # flags decide
    assert load_config(recipe, {"objective.distill.token": "cls"}).model.overrides.get("distilled") is None
    out = tmp_path / "run"
    assert main(["train", *FRESH, "--teacher", str(teacher_dir), "--distill", "hard", "--out", str(out)]) == 0
    assert "is built from scratch, so it gets DeiT's distillation token" in caplog.text
    assert load_config(out / "config.yaml").model.overrides["distilled"] is True
    assert vitkit.load(out / "checkpoints" / "best").config.distilled


def test_pretrained_student_without_the_token_is_refused(
    tmp_path: Path, teacher_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    student = vitkit.create_model("mu/4", num_classes=10, img_size=16, hidden_dim=32, depth=2, num_heads=2, mlp_dim=64)
    ckpt = vitkit.save(student, tmp_path / "student", class_names=DIGITS)
    argv = [*FRESH, "--pretrained", str(ckpt), "--teacher", str(teacher_dir), "--out", str(tmp_path / "run")]
    assert main(["train", *argv]) == 2
    assert "has none: add --distilled" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_class_token_distillation_loss_is_the_formula(tiny_config: ViTConfig, kind: str) -> None:
    student = VisionTransformer(tiny_config)  # no distillation token
    teacher = Linear()
    objective = Distillation(teacher, kind, alpha=0.3, tau=2.0, token="cls")
    images = torch.randn(4, 3, 16, 16)
    targets = F.one_hot(torch.tensor([0, 1, 2, 3]), 5).float() * 0.9 + 0.02
    out = objective(student, Batch(images, targets, targets.argmax(1)))
    cls = student(images)
    with torch.no_grad():
        t = teacher.fc(images.flatten(1))
    if kind == "hard":
        dist = F.cross_entropy(cls, t.argmax(1))
    else:
        p_teacher, log_student = (t / 2).softmax(1), (cls / 2).log_softmax(1)
        dist = (p_teacher * (p_teacher.log() - log_student)).sum() * 4 / cls.numel()
    torch.testing.assert_close(out.loss, 0.7 * F.cross_entropy(cls, targets) + 0.3 * dist)
    out.loss.backward()
    assert student.head.weight.grad is not None and objective.val_metrics == ("top1", "top5", "loss")
    with pytest.raises(ValueError, match="has a distillation token whose head would never learn"):
        objective(VisionTransformer(tiny_config.replace(distilled=True)), Batch(images, targets, targets.argmax(1)))


def test_class_token_distillation_trains(tmp_path: Path, teacher_dir: Path) -> None:
    out = tmp_path / "run"
    argv = [*FRESH, "--teacher", str(teacher_dir), "--distill-token", "cls", "--distill", "soft", "--out", str(out)]
    assert main(["train", *argv]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] == "distill" and "val_top1" in summary and "val_top1_dist" not in summary
    assert {"loss_cls", "loss_dist", "agree"} <= set((out / "metrics.csv").read_text().splitlines()[0].split(","))
    assert not vitkit.load(out / "checkpoints" / "best").config.distilled
    assert load_config(out / "config.yaml").objective.settings.token == "cls"


def test_eval_heads_needs_a_vit(teacher_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", str(teacher_dir), "--data", "digits", "--heads"]) == 2
    assert "per-head evaluation needs a ViT" in capsys.readouterr().err


# --- analyze -------------------------------------------------------------------------------------------------


def test_rollout_map_of_the_distillation_token() -> None:
    rollout = torch.rand(1, 6, 6)
    torch.testing.assert_close(rollout_map(rollout, (2, 2), 2, token=1), rollout[:, 1, 2:].reshape(1, 2, 2))
    with pytest.raises(ValueError, match="token 2 is not a prefix token: the model has 2"):
        rollout_map(rollout, (2, 2), 2, token=2)


def test_token_cosine_is_the_batch_mean_per_state() -> None:
    state = torch.zeros(2, 3, 2)
    state[0, 0], state[0, 1] = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])  # cos 0.7071
    state[1, 0], state[1, 1] = torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 0.0])  # cos -1
    torch.testing.assert_close(token_cosine([state, state]), torch.full((2,), (2**-0.5 - 1) / 2))


def test_analyze_shows_both_tokens(tmp_path: Path, tiny_config: ViTConfig) -> None:
    model = VisionTransformer(tiny_config.replace(distilled=True, num_classes=10))
    with torch.no_grad():
        model.cls_token.normal_()
    vitkit.save(model, tmp_path / "ckpt", class_names=DIGITS)
    document = analyze_checkpoint(tmp_path / "ckpt", tmp_path / "out", data="digits", num_images=2)
    tokens = document["distillation_token"]
    learned = F.cosine_similarity(model.cls_token.flatten(), model.dist_token.flatten(), dim=0).item()
    assert tokens["learned_tokens"] == pytest.approx(learned, abs=1e-4)
    assert len(tokens["by_layer"]) == tiny_config.depth + 1 and -1 <= tokens["output"] <= 1
    image = document["images"][0]
    cls_png, dist_png = [(tmp_path / "out" / image[key]).read_bytes() for key in ("figure", "figure_dist")]
    assert dist_png[:4] == b"\x89PNG" and dist_png != cls_png
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Class and distillation tokens" in page and page.count("<img ") == 2 * 2 + 3
