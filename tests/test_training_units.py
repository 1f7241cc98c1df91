"""Pieces of the training loop: EMA, metrics log truncation on resume, RNG capture, the time budget, precision."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from vitkit import create_model
from vitkit.training import load_config, train
from vitkit.training import runtime as runtime_module
from vitkit.training.ema import ModelEma
from vitkit.training.metrics import MetricsLog, plot_curves, read_metrics
from vitkit.training.runtime import autocast, default_threads, precision_warning, resolve_precision
from vitkit.training.state import capture_rng, restore_rng


def tiny_model():
    return create_model("mu/4", num_classes=3, img_size=8, hidden_dim=16, depth=1, num_heads=2, mlp_dim=16)


def test_ema_follows_the_weights_with_a_warm_up() -> None:
    model = tiny_model()
    ema = ModelEma(model, decay=0.99)
    assert ema.current_decay() == pytest.approx(1 / 10)  # (1 + 0) / (10 + 0): early averages move fast
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    ema.update(model)
    for key, value in ema.model.state_dict().items():
        expected = 0.1 * before[key] + 0.9 * model.state_dict()[key]
        torch.testing.assert_close(value, expected)
    assert not any(p.requires_grad for p in ema.model.parameters())
    restored = ModelEma(tiny_model(), decay=0.99)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 1 and restored.current_decay() == ema.current_decay()


def test_metrics_log_is_cut_back_on_resume(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    assert log.rows == 0
    for step in range(1, 7):
        log.write("step", epoch=1 + (step > 3), step=step, loss=1.0 / step, acc=10.0 * step)
        if step == 3:
            log.write("epoch", epoch=1, step=3, loss=0.5, acc=30.0, val_top1=40.0, val_loss=0.9)
    log.close()
    with open(tmp_path / "metrics.csv", "a") as handle:
        handle.write("step,2,7,0.1")  # half a row: the kill came mid-write
    MetricsLog(tmp_path, keep_rows=5).close()  # the checkpoint had seen 5 rows (4 steps and 1 epoch)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [(r["kind"], r["step"]) for r in rows] == [("step", "1"), ("step", "2"), ("step", "3"), ("epoch", "3"),
                                                      ("step", "4")]  # fmt: skip
    assert plot_curves(tmp_path / "metrics.csv", tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_rng_round_trip_through_storage(tmp_path: Path) -> None:
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_precision_choices(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu)[0] == "fp32" and resolve_precision("bf16", cpu)[0] == "bf16"
    with autocast("bf16", cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast("fp32", cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize(("speedup", "chosen"), [(4.4, "bf16"), (1.1, "fp32"), (0.01, "fp32")])
def test_auto_precision_follows_the_measured_speedup(monkeypatch, speedup: float, chosen: str) -> None:
    monkeypatch.setattr(runtime_module, "bf16_speedup", lambda: speedup)
    precision, reason, measured = resolve_precision("auto", torch.device("cpu"))
    assert precision == chosen and measured == speedup and f"{speedup:.1f}" in reason


def test_bf16_probe_is_measured_once_and_cached(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def rates(dtypes):
        calls.append(dtypes)
        return {torch.bfloat16: 300.0, torch.float32: 100.0}

    monkeypatch.setattr(runtime_module, "matmul_rates", rates)
    cache = tmp_path / "probes.json"
    assert runtime_module.bf16_speedup(cache) == pytest.approx(3.0)
    assert runtime_module.bf16_speedup(cache) == pytest.approx(3.0)
    assert calls == [(torch.bfloat16, torch.float32)]  # one probe of both, then the cache answers
    assert list(json.loads(cache.read_text()).values()) == [3.0]


def test_real_probe_measures_a_positive_rate_for_each_dtype() -> None:
    rates = runtime_module.matmul_rates((torch.bfloat16, torch.float32), size=64, seconds=0.01)
    assert set(rates) == {torch.bfloat16, torch.float32} and min(rates.values()) > 0


def test_threads_default_to_the_cores_this_process_may_use() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    assert default_threads() == cores
    two_ranks = runtime_module.DistContext(rank=0, world_size=2, local_rank=0, local_world_size=2)
    assert default_threads(two_ranks) == max(1, cores // 2)
    config = load_config(overrides={"data.limit_per_class": 2})
    assert config.runtime.threads is None  # the default recipe pins nothing


def test_slow_bf16_on_cpu_is_warned_about(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(runtime_module, "bf16_speedup", lambda: 0.01)
    warning = precision_warning("bf16", cpu)
    assert warning is not None and "--precision fp32" in warning and "0.01x the fp32 rate" in warning
    assert precision_warning("fp32", cpu) is None and precision_warning("bf16", cuda) is None
    monkeypatch.setattr(runtime_module, "bf16_speedup", lambda: 4.0)
    assert precision_warning("bf16", cpu) is None


def test_attention_kernel_is_chosen_by_timing(monkeypatch) -> None:
    runtime = runtime_module.Runtime(torch.device("cpu"), "fp32", threads=1)
    times = {"math": 0.002, "flash": 0.005, "eager": 0.003}
    monkeypatch.setattr(runtime_module, "time_attention", lambda kind, *shape: times[kind])
    runtime.choose_attention(8, 2, 17, 8)
    assert runtime.attention == "math" and "math 2.0 ms" in runtime.attention_reason
    assert "eager 3.0 ms" in runtime.attention_reason
    times["eager"] = 0.001
    faster = runtime_module.Runtime(torch.device("cpu"), "fp32", threads=1)
    faster.choose_attention(8, 2, 17, 8)
    assert faster.attention == "eager"
    fixed = runtime_module.Runtime(torch.device("cpu"), "fp32", threads=1, attention="flash")
    fixed.choose_attention(8, 2, 17, 8)
    assert fixed.attention == "flash"


def test_time_budget_cuts_the_epochs(tmp_path: Path) -> None:
    config = load_config(
        overrides={
            "data.limit_per_class": 5,
            "data.img_size": 8,
            "model.hidden_dim": 16,
            "model.depth": 1,
            "model.num_heads": 2,
            "model.mlp_dim": 16,
            "model.name": "mu/4",
            "run.epochs": 5,
            "run.batch_size": 8,
            "run.time_budget_min": 1e-7,  # 6 us: shorter than any step, however fast the machine and kernels
            "runtime.precision": "fp32",
        }  # fmt: skip
    )
    summary = train(config, tmp_path / "run", progress_bar=False)
    assert summary["epochs"] == summary["planned_epochs"] == 1
    assert summary["steps"] == 1  # out of time after its first step: the epoch stops there, then validates once
    state = torch.load(tmp_path / "run" / "checkpoints" / "last" / "training_state.pt", weights_only=True)
    assert state["progress"]["planned_epochs"] == 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"


def test_a_longer_plan_after_an_epoch_cut_short_trains_its_steps(tmp_path: Path, monkeypatch) -> None:
    from vitkit.training import trainer as trainer_module
    from vitkit.training.budget import Plan

    # 5 steps an epoch; epoch 2 is cut at step 7, then 2 more steps fit: still within 2 epochs' worth of steps.
    plans = iter([Plan(7, 0), Plan(9, 0), Plan(9, 0)])
    monkeypatch.setattr(trainer_module, "plan_steps", lambda *args, **kwargs: next(plans))
    monkeypatch.setattr(trainer_module, "replan_due", lambda *args: False)  # the plans at epoch ends only
    config = load_config(
        overrides={
            "data.limit_per_class": 5,
            "data.img_size": 8,
            "model.name": "mu/4",
            "model.hidden_dim": 16,
            "model.depth": 1,
            "model.num_heads": 2,
            "model.mlp_dim": 16,
            "run.epochs": 5,
            "run.batch_size": 8,
            "run.time_budget_min": 60,
            "runtime.precision": "fp32",
        }  # fmt: skip
    )
    summary = train(config, tmp_path / "run", progress_bar=False)
    assert summary["steps"] == 9 and summary["epochs"] == 3  # 5 + 2 (cut) + 2 more in one more epoch


def test_progressive_resizing_trains_low_then_full_resolution(tmp_path: Path) -> None:
    overrides = {"data.limit_per_class": 5, "data.img_size": 16, "model.name": "mu/4", "model.hidden_dim": 16,
                 "model.depth": 1, "model.num_heads": 2, "model.mlp_dim": 16, "model.posemb": "learned",
                 "run.epochs": 2, "run.batch_size": 8, "runtime.precision": "fp32", "run.low_res_size": 8,
                 "run.low_res_epochs": 1}  # fmt: skip
    seen = []
    original = torch.nn.Conv2d.forward

    def spy(self, x):
        if self.training:
            seen.append(x.shape[-1])
        return original(self, x)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Conv2d, "forward", spy)
        summary = train(load_config(overrides=overrides), tmp_path / "run", progress_bar=False)
    assert summary["status"] == "finished" and summary["epochs"] == 2
    steps = len(seen) // 2
    assert seen == [8] * steps + [16] * steps  # epoch 1 at 8 px, epoch 2 at 16 px
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        train(load_config(overrides={**overrides, "run.low_res_size": 10}), tmp_path / "bad", progress_bar=False)
    with pytest.raises(ValueError, match="replace run.low_res_epochs with run.low_res_share"):
        load_config(overrides={**overrides, "run.time_budget_min": 5.0})


def test_a_generous_budget_is_planned_in_steps_and_capped_by_the_epochs(tmp_path: Path) -> None:
    overrides = {"data.limit_per_class": 5, "data.img_size": 16, "model.name": "Mini/4", "model.hidden_dim": 16,
                 "model.depth": 1, "model.num_heads": 2, "model.mlp_dim": 16, "model.posemb": "learned",
                 "run.epochs": 3, "run.batch_size": 8, "runtime.precision": "fp32", "run.low_res_size": 8,
                 "run.low_res_share": 0.5, "run.time_budget_min": 30.0}  # fmt: skip
    summary = train(load_config(overrides=overrides), tmp_path / "run", progress_bar=False)
    assert summary["status"] == "finished" and summary["epochs"] == 3
    state = torch.load(tmp_path / "run" / "checkpoints" / "last" / "training_state.pt", weights_only=True)
    progress = state["progress"]
    steps_per_epoch = progress["step"] // 3
    assert progress["planned_steps"] == progress["step"] == 3 * steps_per_epoch  # the recipe's epochs cap the plan
    # Half of a 30-minute budget is far more than 3 epochs: every step trained at the low resolution, which was
    # measured; the full resolution's step time is only estimated (by token count) until it runs.
    assert progress["switch_step"] == progress["planned_steps"]
    assert set(progress["budget_clock"]["step_s"]) == {"8"}
    with pytest.raises(ValueError, match="run.low_res_share is a share of run.time_budget_min"):
        load_config(overrides={**overrides, "run.time_budget_min": 0.0})


@pytest.mark.parametrize("kind", runtime_module.ATTENTION)
def test_time_attention_runs_each_kernel_forward_and_backward(kind: str) -> None:
    seconds = runtime_module.time_attention(kind, 2, 2, 5, 4, "bf16")
    assert 0 < seconds < 5


def test_eager_kernel_computes_attention_without_sdpa(monkeypatch) -> None:
    """Inside `attention_kernel("eager")` the model never calls SDPA and gives the fused kernel's outputs and
    gradients; outside it SDPA is used again."""
    torch.manual_seed(0)
    model = create_model("Ti/4", img_size=16, num_classes=3, depth=2, hidden_dim=24, num_heads=2, mlp_dim=48)
    images = torch.randn(4, 3, 16, 16)

    def logits_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logits = model(images)
        logits.square().sum().backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    fused_logits, fused_grads = logits_and_grads()
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    counted = lambda *args, **kwargs: calls.append(1) or sdpa(*args, **kwargs)  # noqa: E731
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
    with runtime_module.attention_kernel("eager"):
        eager_logits, eager_grads = logits_and_grads()
    assert not calls
    torch.testing.assert_close(eager_logits, fused_logits, rtol=1e-5, atol=1e-5)
    for eager, fused in zip(eager_grads, fused_grads, strict=True):
        torch.testing.assert_close(eager, fused, rtol=1e-4, atol=1e-5)
    model(images)
    assert len(calls) == 2  # one per block, back on the fused kernel
