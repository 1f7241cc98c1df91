"""The run state by concern, its storage in training_state.pt (and the version-2 layout), and the EMA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vitkit import create_model
from vitkit.training import load_config, train
from vitkit.training import runtime as runtime_module
from vitkit.training import trainer as trainer_module
from vitkit.training.ema import ModelEma
from vitkit.training.state import (
    SECTIONS,
    STATE_FILE,
    LogPosition,
    Progress,
    RunState,
    Scores,
    StreamPosition,
    Timers,
    load_training_state,
)

TINY = {"data.limit_per_class": 4, "data.img_size": 8, "model.name": "mu/4", "model.hidden_dim": 16,
        "model.depth": 1, "model.num_heads": 2, "model.mlp_dim": 16, "run.epochs": 2, "run.batch_size": 8,
        "runtime.precision": "fp32", "runtime.threads": 1, "runtime.attention": "math", "optim.ema_decay": 0.9,
        "optim.warmup_steps": 2}  # fmt: skip


VERSION_3_SECTIONS = ("progress", "scores", "timers", "log")  # version 4 added "stream"


def as_version_2(state: dict) -> dict:
    """The same training state as vitkit wrote it before the run state was split: one flat "progress" dict."""
    flat = {key: value for name in VERSION_3_SECTIONS for key, value in state[name].items()}
    rest = {key: value for key, value in state.items() if key not in SECTIONS}
    return {**rest, "version": 2, "progress": flat}


def test_run_state_sections_round_trip() -> None:
    state = RunState(
        progress=Progress(epoch=2, batch=3, step=11, planned_epochs=4, images=88, epoch_stats={"seen": 24.0}),
        scores=Scores(best_value=61.5, best_scores={"top1": 61.5}, best_epoch=2, best_weights="ema"),
        timers=Timers(elapsed_s=9.5, train_s=7.0, data_wait_s=0.5, augment_s=1.0),
        log=LogPosition(metrics_rows=14),
    )
    saved = state.to_dict()
    assert list(saved) == ["progress", "scores", "timers", "log", "stream"] and saved["progress"]["step"] == 11
    assert RunState.from_dict(saved) == state


class Stop(Exception):
    """Stands for a kill right after the first epoch's checkpoints."""


def train_one_epoch_then_stop(overrides: dict, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start a run and stop it as a kill would, right after checkpoints/last of epoch 1 is written."""

    def stop(*_args):
        raise Stop

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "plot_curves", stop)  # runs after checkpoints/last of epoch 1 is written
        with pytest.raises(Stop):
            train(load_config(overrides=overrides), run_dir, progress_bar=False)


def same_weights(run_a: Path, run_b: Path, checkpoint: str) -> bool:
    """Whether two runs' checkpoints/<checkpoint> hold bit-identical tensors under the same names."""
    a = load_file(run_a / "checkpoints" / checkpoint / "model.safetensors")
    b = load_file(run_b / "checkpoints" / checkpoint / "model.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_version_2_training_state_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = train(load_config(overrides=TINY), tmp_path / "straight", progress_bar=False)
    train_one_epoch_then_stop(TINY, tmp_path / "old", monkeypatch)
    state_file = tmp_path / "old" / "checkpoints" / "last" / STATE_FILE
    current = torch.load(state_file, weights_only=True)
    assert current["version"] == 4 and current["progress"]["epoch"] == 1
    torch.save(as_version_2(current), state_file)
    assert load_training_state(state_file)["scores"] == current["scores"]
    resumed = train(None, tmp_path / "old", resume=True, progress_bar=False)
    assert resumed["steps"] == straight["steps"] and resumed["best_value"] == straight["best_value"]
    for name in ("last", "best", "ema"):
        assert same_weights(tmp_path / "straight", tmp_path / "old", name), name


def test_a_resumed_run_keeps_the_attention_kernel_it_timed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Re-timing on resume could pick another kernel (they round differently) and break exact resume.
    timings = {"math": 0.001, "flash": 0.002, "eager": 0.003}
    monkeypatch.setattr(runtime_module, "time_attention", lambda kind, *shape: timings[kind])
    timed = {**TINY, "runtime.attention": "auto"}
    straight = train(load_config(overrides=timed), tmp_path / "straight", progress_bar=False)
    assert straight["attention"] == "math"
    train_one_epoch_then_stop(timed, tmp_path / "killed", monkeypatch)
    timings.update(math=0.003, eager=0.001)  # the machine got busy: eager now times fastest
    resumed = train(None, tmp_path / "killed", resume=True, progress_bar=False)
    assert resumed["attention"] == "math"
    assert same_weights(tmp_path / "straight", tmp_path / "killed", "last")


def test_a_version_3_training_state_gets_an_empty_stream_position(tmp_path: Path) -> None:
    state = RunState(progress=Progress(epoch=1, batch=2, step=5)).to_dict()
    del state["stream"]
    torch.save({"version": 3, **state}, tmp_path / STATE_FILE)
    loaded = load_training_state(tmp_path / STATE_FILE)
    assert loaded["version"] == 4 and RunState.from_dict(loaded).stream == StreamPosition()
    assert RunState.from_dict(loaded).progress.batch == 2


def test_a_state_of_another_version_is_refused(tmp_path: Path) -> None:
    torch.save({"version": 1, "progress": {}}, tmp_path / STATE_FILE)
    with pytest.raises(ValueError, match="not a vitkit training state"):
        load_training_state(tmp_path / STATE_FILE)


def test_ema_averages_float_buffers_and_copies_integer_ones() -> None:
    model = create_model("resnet20", num_classes=3)
    ema = ModelEma(model, decay=0.5)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
        for buffer in model.buffers():
            buffer.add_(3 if not buffer.is_floating_point() else 0.5)
    ema.update(model)  # decay (1 + 0) / (10 + 0) = 0.1
    current = model.state_dict()
    for key, value in ema.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, torch.lerp(before[key], current[key], 0.9), rtol=0, atol=0)
        else:
            assert torch.equal(value, current[key]), key  # num_batches_tracked
    assert ema.updates == 1 and ema.current_decay() == pytest.approx(2 / 11)
    assert type(ema.model) is type(model) and not any(p.requires_grad for p in ema.model.parameters())
