"""The time-budget planner: a simulated run with a slow first epoch ends within 2% of its budget, never past it."""

from __future__ import annotations

import re

import pytest

from vitkit.training.budget import BudgetClock, ScheduleAnchor, plan_steps


def simulate(
    budget_s, step_s, steps_per_epoch, *, epoch_end_s=3.0, first_epoch_extra=0.6, low=None, share=0.0, load=None
):
    """Run a fake loop as the trainer does: steps cost `step_s[resolution]` (x (1 + extra) in the first epoch, x
    `load(epoch)` when given: other jobs on the machine), ends cost epoch_end_s; a plan after every epoch, the
    out-of-time stop after every step. Returns the elapsed time, the steps and the plans' totals."""
    clock, elapsed, step, total, switch = BudgetClock(), 0.0, 0, 10**9, 0
    epoch, totals = 0, []
    while step < total:
        times = []
        for _ in range(steps_per_epoch):
            if step >= total:
                break
            size = low if (low and step < switch) or (low and epoch == 0) else 32
            cost = step_s[size] * ((1 + first_epoch_extra) if epoch == 0 else 1.0) * (load(epoch) if load else 1.0)
            elapsed, step = elapsed + cost, step + 1
            times.append(cost)
            if clock.out_of_time(elapsed, budget_s):
                total = step
                break
        elapsed += epoch_end_s
        clock.observe_epoch(size, times, epoch_end_s)
        if epoch == 0 and low:
            switch = 10**9
        epoch += 1
        if step >= total:
            break
        plan = plan_steps(
            clock, budget_s=budget_s, elapsed_s=elapsed, step=step, steps_per_epoch=steps_per_epoch,
            max_steps=10**6, full_size=32, low_size=low, low_share=share, switch_step=switch,
        )  # fmt: skip
        total, switch = plan.total_steps, plan.switch_step
        totals.append(total)
    return elapsed, step, totals


@pytest.mark.parametrize("step_s", [0.05, 0.13, 0.4])
def test_a_budgeted_run_ends_within_two_percent_and_never_past(step_s):
    elapsed, steps, _ = simulate(600.0, {32: step_s}, steps_per_epoch=100)
    assert 0.98 * 600 <= elapsed <= 600, elapsed


def test_progressive_resizing_spends_its_share_at_low_resolution():
    elapsed, _, _ = simulate(900.0, {16: 0.03, 32: 0.1}, steps_per_epoch=100, low=16, share=0.6)
    assert 0.98 * 900 <= elapsed <= 900, elapsed


def test_one_slow_epoch_does_not_shorten_the_plan():
    steady = simulate(1200.0, {32: 0.1}, steps_per_epoch=100)
    spiked = simulate(1200.0, {32: 0.1}, steps_per_epoch=100, load=lambda epoch: 3.0 if epoch == 4 else 1.0)
    # The plans made after the slow epoch 5 lose only the 200 steps' worth of time it took (20 s at 0.1 s a step):
    # its step time is outvoted by the epochs before it (planning from it alone, 0.3 s, would halve the rest).
    lost = [a - b for a, b in zip(steady[2][4:6], spiked[2][4:6], strict=True)]
    assert all(0 <= steps <= 200 for steps in lost), (spiked[2], steady[2])
    assert 0.98 * 1200 <= spiked[0] <= 1200, spiked[0]


@pytest.mark.parametrize("slow_from", [3, 8])
def test_a_machine_that_slows_down_for_good_still_ends_within_the_budget(slow_from):
    elapsed, _, _ = simulate(1200.0, {32: 0.1}, steps_per_epoch=100, load=lambda e: 2.0 if e >= slow_from else 1.0)
    assert 0.97 * 1200 <= elapsed <= 1200, elapsed


def test_the_plan_stops_at_the_recipes_epochs():
    clock = BudgetClock({32: 0.01}, 1.0)
    plan = plan_steps(clock, budget_s=1e6, elapsed_s=10, step=100, steps_per_epoch=100, max_steps=500, full_size=32)
    assert plan.total_steps == 500


def test_a_plan_past_the_budget_stops_at_once():
    clock = BudgetClock({32: 1.0}, 5.0)
    plan = plan_steps(clock, budget_s=100, elapsed_s=120, step=300, steps_per_epoch=100, max_steps=10**6, full_size=32)
    assert plan.total_steps == 300


def test_the_first_steps_of_a_resolution_are_not_its_steady_state():
    clock = BudgetClock()
    clock.observe_epoch(32, [5.0] * 10 + [1.0] * 90, 2.0)  # compilation in the first tenth
    assert clock.step_time(32) == pytest.approx(1.0)
    assert clock.step_time(16) == pytest.approx(0.25)  # estimated by token count until measured
    assert BudgetClock.from_dict(clock.to_dict()) == clock


def test_a_new_plan_continues_the_decay_without_a_jump():
    warmup, old_total, new_total, at = 10, 1000, 600, 400
    anchor = ScheduleAnchor()
    before = anchor.progress_at(at, warmup, old_total)
    assert before == pytest.approx((at - warmup) / (old_total - warmup))  # the plain schedule before any change
    moved = anchor.moved_to(at, warmup, old_total)
    assert moved.progress_at(at, warmup, new_total) == pytest.approx(before)
    assert moved.progress_at(new_total, warmup, new_total) == 1.0
    assert moved.progress_at(500, warmup, new_total) == pytest.approx(before + (1 - before) * 100 / 200)


def test_a_long_low_resolution_share_never_plans_past_the_recipes_epochs():
    clock = BudgetClock({8: 0.005}, 0.1)
    plan = plan_steps(
        clock, budget_s=1800, elapsed_s=5, step=10, steps_per_epoch=10, max_steps=30, full_size=16, low_size=8,
        low_share=0.5, switch_step=10**12,
    )  # fmt: skip
    assert plan.total_steps == 30 and plan.switch_step == 30


def test_short_epochs_whose_validation_outweighs_training_still_fill_the_budget():
    # A 5% subset: 8 steps of 0.05 s an epoch, then 4 s of validation; the old fixed-point plan collapsed to 1 epoch.
    clock = BudgetClock()
    clock.observe_epoch(32, [0.05] * 8, epoch_end_s=4.0)
    plan = plan_steps(clock, budget_s=420, elapsed_s=9, step=8, steps_per_epoch=8, max_steps=3200, full_size=32)
    epochs_left = (plan.total_steps - 8) / 8
    assert 85 <= epochs_left <= 93, plan  # (420 x 0.99 - 9) / (8 x 0.05 + 4) = 92.4 epochs, the last one's end included


def test_a_plan_within_an_epoch_comes_at_powers_of_two_and_only_for_long_epochs():
    from vitkit.training.budget import replan_due

    due = [k for k in range(1, 200) if replan_due(k, 0, 1000)]
    assert due == [2, 4, 8, 16, 32, 64, 128, 192]
    assert not replan_due(1, 0, 1000)
    assert replan_due(8, 30, 1000)  # the budget holds a few dozen steps of a 1000-step epoch
    assert not replan_due(8, 4000, 1000)  # four epochs or more: planning at epoch ends is enough


def test_a_short_plan_caps_the_warm_up_and_decays_to_the_minimum():
    from vitkit.training.budget import capped_warmup
    from vitkit.training.config import OptimConfig
    from vitkit.training.optim import learning_rate

    assert capped_warmup(140, 0) == 140  # unplanned: the recipe's
    assert capped_warmup(140, 30) == 10 and capped_warmup(5, 30) == 5 and capped_warmup(140, 2) == 1
    optim = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_epochs=2)
    warmup = capped_warmup(140, 30)
    rates = [learning_rate(step, optim, warmup, 30) for step in range(30)]
    assert max(rates) == pytest.approx(1e-3) and rates[-1] < 2e-5


def test_a_partial_epoch_plans_from_its_median_and_estimates_the_end():
    from vitkit.training.budget import StepTimes, estimate_epoch_end

    times = StepTimes([5.0, 1.0, 1.0, 1.2, 0.9])
    clock = BudgetClock().with_partial_epoch(32, times, estimate_epoch_end(1.0, 10, 200))
    assert clock.step_s == {32: 1.0} and clock.epoch_end_s == pytest.approx(10.0)  # 200 images x 0.5 x 0.1 s
    assert times == [5.0, 1.0, 1.0, 1.2, 0.9]  # still in step order, for the epoch's mean
    assert BudgetClock(epoch_end_s=3.0).with_partial_epoch(32, StepTimes([1.0]), 10.0).epoch_end_s == 3.0
    plan = plan_steps(clock, budget_s=60, elapsed_s=10, step=8, steps_per_epoch=1000, max_steps=10**5, full_size=32)
    assert plan.total_steps == 8 + int(60 * 0.99 - 10 - 10)  # one epoch end left to pay for


def test_step_times_keep_the_running_median_of_statistics_median():
    import random
    import statistics

    from vitkit.training.budget import StepTimes

    rng = random.Random(0)
    times = StepTimes()
    for _ in range(101):
        times.append(rng.expovariate(1.0))
        assert times.median() == statistics.median(times)


def test_an_epoch_longer_than_the_budget_is_planned_within_it_and_stops_in_time(tmp_path, monkeypatch):
    import time as real_time
    from types import SimpleNamespace

    from vitkit.training import load_config, train
    from vitkit.training import trainer as trainer_module
    from vitkit.training.metrics import read_metrics

    fake = {"offset": 0.0}  # every training step takes five (fake) seconds more than it does
    clock = SimpleNamespace(perf_counter=lambda: real_time.perf_counter() + fake["offset"])
    monkeypatch.setattr(trainer_module, "time", clock)
    original = trainer_module.train_step

    def slow_step(*args):
        fake["offset"] += 5.0
        return original(*args)

    monkeypatch.setattr(trainer_module, "train_step", slow_step)
    config = load_config(
        overrides={"data.limit_per_class": 20, "data.img_size": 8, "model.name": "mu/4", "model.hidden_dim": 16,
                   "model.depth": 1, "model.num_heads": 2, "model.mlp_dim": 16, "run.epochs": 3, "run.batch_size": 2,
                   "run.time_budget_min": 3.0, "runtime.precision": "fp32", "optim.warmup_epochs": 2}
    )  # fmt: skip
    summary = train(config, tmp_path / "run", progress_bar=False)
    steps_per_epoch = 180 // 2  # 200 digits, 10% held out
    # 180 s of 5-s steps: epoch 1 is cut within by the plan (its end estimated), the few seconds its validation
    # did not take go to a few steps of a second epoch; the run never passes its budget.
    assert summary["epochs"] <= 2 and 25 <= summary["steps"] < 40 < steps_per_epoch
    assert 0.9 * 180 <= summary["wall_s"] <= 180
    rates = [float(row["lr"]) for row in read_metrics(tmp_path / "run" / "metrics.csv") if row["lr"]]
    peak = max(rates)
    assert peak > 0.5 * config.optim.lr  # the capped warm-up reached (near) the peak
    assert rates[-1] < 0.1 * config.optim.lr  # and the decay ended near the minimum


def test_a_validation_longer_than_the_budget_is_said_and_training_stops_at_once(tmp_path, monkeypatch, capsys):
    import time as real_time
    from types import SimpleNamespace

    from vitkit.training import load_config, train
    from vitkit.training import trainer as trainer_module

    fake = {"offset": 0.0}
    clock = SimpleNamespace(perf_counter=lambda: real_time.perf_counter() + fake["offset"])
    monkeypatch.setattr(trainer_module, "time", clock)
    original = trainer_module.train_step

    def slow_step(*args):
        fake["offset"] += 5.0  # 20 validation images at half a 5-s step of 2 images: 25 s, over an 18-s budget
        return original(*args)

    monkeypatch.setattr(trainer_module, "train_step", slow_step)
    config = load_config(
        overrides={"data.limit_per_class": 20, "data.img_size": 8, "model.name": "Mini/4", "model.hidden_dim": 16,
                   "model.depth": 1, "model.num_heads": 2, "model.mlp_dim": 16, "run.epochs": 1, "run.batch_size": 2,
                   "run.time_budget_min": 0.3, "runtime.precision": "fp32"}
    )  # fmt: skip
    summary = train(config, tmp_path / "run", progress_bar=False)
    printed = capsys.readouterr().out
    # 25 s of fake step time plus the real one (a busy machine adds a second or so)
    assert re.search(r"one validation is estimated at 2\ds, longer than the budget", printed)
    assert "stopping at step 1" in printed and summary["status"] == "finished"  # the first epoch stopped at once
    assert summary["wall_s"] <= 18  # the real validation was quick: the plan after it used what was left
