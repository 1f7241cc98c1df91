"""A time budget used whole: the run's length is planned again after every epoch, in steps, from measured times.

`run.time_budget_min` fixes the wall time of a run instead of its epochs. After each epoch the planner looks at
what this run has measured — the time of a training step at each resolution in steady state (the first steps of
a resolution, where compilation and warm-up happen, are left out) and the time an epoch's end takes (validation
and checkpoints) — and sets the total number of steps that fits in what is left, keeping a safety margin. The
last epoch may be cut short; the run then validates once more and ends. So a budgeted run ends close to its
budget (the margin is 1%), also on a CPU other than the one its recipe was tuned on, and never plans past it.

With progressive resizing the low-resolution phase is a share of the budget (`run.low_res_share`): the switch
step is planned the same way. Until a resolution has been measured its step time is estimated from the other's,
scaled by the token count.

A step time is the median of the last three epochs' steady-state means at that resolution, so one epoch slowed
by another job on the machine does not shorten the plan (and with it the decay) while a lasting change is
followed within two epochs. Should the machine slow down within the last epoch, `out_of_time` stops the epoch
when what is left of the budget no longer covers the epoch's end.

The learning-rate schedule follows the plan without jumps: `ScheduleAnchor` re-fits the rest of the decay to the
new length from the step and the progress at which the plan changed.

An epoch may be longer than the whole budget (large images, a large model, a short budget). While the run is
unplanned (its first epoch) or the budget holds fewer than `LONG_EPOCHS` epochs, the plan is also made within the
epoch, after 2, 4, 8, 16, ... and every 64 steps (`replan_due`), from the median of the epoch's step times so far
(`BudgetClock.with_partial_epoch`; `StepTimes` keeps them sorted, so a re-plan after every step stays cheap); an
epoch end not yet measured is estimated from the step time and the validation set's size (`estimate_epoch_end`),
and the out-of-time check reserves that estimate after every step.
The warm-up is capped at a third of the planned steps (`capped_warmup`), so a plan of a few dozen steps still warms
up, decays and ends at the minimum rate. A validation that alone takes longer than the budget still runs once.
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import asdict, dataclass, field

MARGIN = 0.99  # plan for 99% of the budget: the last validation and checkpoint must fit too
WARMUP_SHARE = 0.1  # the share of a resolution's first epoch left out of its steady-state step time
RECENT_EPOCHS = 3  # a step time is the median of this many latest epochs' means
LONG_EPOCHS = 4  # plan within each epoch while the budget holds fewer epochs than this (or none is planned yet)
REPLAN_FIRST = 2  # the first plan within an epoch comes after this many of its steps
REPLAN_EVERY = 64  # past the powers of two, plan within the epoch every this many steps
WARMUP_CAP = 1 / 3  # the warm-up never takes more than this share of the planned steps
VALIDATION_COST = 0.5  # a validation image costs about this share of a training image's step (forward only)


@dataclass
class BudgetClock:
    """What the planner has measured so far (saved with the run state, so a resumed run keeps planning)."""

    step_s: dict[int, float] = field(default_factory=dict)  # the planning step time by resolution (median of recent)
    epoch_end_s: float = 0.0  # seconds of the last epoch's end: validation, checkpoints, curves
    recent_s: dict[int, list[float]] = field(default_factory=dict)  # the latest epochs' steady means, by resolution

    def to_dict(self) -> dict:
        """Plain values for the training state."""
        return {
            "step_s": {str(k): v for k, v in self.step_s.items()},
            "epoch_end_s": self.epoch_end_s,
            "recent_s": {str(k): v for k, v in self.recent_s.items()},
        }

    @classmethod
    def from_dict(cls, data: dict | None) -> BudgetClock:
        """Rebuild from `to_dict` (an absent entry, from an older run, starts unmeasured)."""
        data = data or {}
        step_s = {int(k): float(v) for k, v in (data.get("step_s") or {}).items()}
        recent = {int(k): [float(x) for x in v] for k, v in (data.get("recent_s") or {}).items()}
        for size, seconds in step_s.items():
            recent.setdefault(size, [seconds])  # a run saved before `recent_s` existed
        return cls(step_s, float(data.get("epoch_end_s", 0)), recent)

    def observe_epoch(self, resolution: int, step_times: list[float], epoch_end_s: float) -> None:
        """Record an epoch's per-step times at `resolution` and the time its end took."""
        if step_times:
            skip = math.ceil(len(step_times) * WARMUP_SHARE) if resolution not in self.step_s else 0
            steady = step_times[skip:] or step_times
            recent = (self.recent_s.get(resolution, []) + [sum(steady) / len(steady)])[-RECENT_EPOCHS:]
            self.recent_s[resolution] = recent
            self.step_s[resolution] = statistics.median(recent)
        self.epoch_end_s = epoch_end_s

    def with_partial_epoch(self, resolution: int, step_times: StepTimes, epoch_end_s: float) -> BudgetClock:
        """A copy that plans from this epoch's steps so far (their median: robust to the first, slow ones); the
        epoch end is `epoch_end_s` until one has been measured. The run's own record is left unchanged."""
        step_s = dict(self.step_s)
        if step_times:
            step_s[resolution] = step_times.median()
        recent = {k: list(v) for k, v in self.recent_s.items()}
        return BudgetClock(step_s, self.epoch_end_s or epoch_end_s, recent)

    def out_of_time(self, elapsed_s: float, budget_s: float) -> bool:
        """Whether a run at `elapsed_s` must stop training now for its last epoch end to fit in `budget_s`."""
        return elapsed_s + self.epoch_end_s >= budget_s

    def step_time(self, resolution: int) -> float | None:
        """Measured seconds per step at `resolution`, else estimated from another resolution by token count."""
        if resolution in self.step_s:
            return self.step_s[resolution]
        if not self.step_s:
            return None
        known, seconds = max(self.step_s.items())
        return seconds * (resolution / known) ** 2


class StepTimes(list):
    """An epoch's step times in order, with their median at any point in O(1): the run re-plans after every step
    until its first epoch end is measured, and a median taken by sorting each time would make an epoch of n steps
    cost O(n^2 log n) in planning alone. A sorted copy is kept beside the list (`bisect.insort`)."""

    def __init__(self, times: list[float] | tuple[float, ...] = ()) -> None:
        super().__init__()
        self.ordered: list[float] = []
        for seconds in times:
            self.append(seconds)

    def append(self, seconds: float) -> None:
        """Record one step's time."""
        super().append(seconds)
        bisect.insort(self.ordered, seconds)

    def median(self) -> float:
        """The median step time so far (`statistics.median`'s value)."""
        middle = len(self.ordered) // 2
        if len(self.ordered) % 2:
            return self.ordered[middle]
        return (self.ordered[middle - 1] + self.ordered[middle]) / 2


def replan_due(epoch_step: int, planned_steps: int, steps_per_epoch: int) -> bool:
    """Whether to plan again after `epoch_step` steps of the current epoch: only while unplanned or while the
    budget holds fewer than `LONG_EPOCHS` epochs (the same answer on every rank: it depends on counts only)."""
    if planned_steps and planned_steps >= LONG_EPOCHS * steps_per_epoch:
        return False
    if epoch_step < REPLAN_FIRST:
        return False
    return epoch_step & (epoch_step - 1) == 0 or epoch_step % REPLAN_EVERY == 0


def estimate_epoch_end(step_s: float, batch_size: int, val_images: int, passes: int = 1) -> float:
    """Seconds of an epoch end not yet measured: `passes` forward passes over the validation set, each image at
    `VALIDATION_COST` of a training image's share of a step (checkpoints are small beside it)."""
    return passes * val_images * VALIDATION_COST * step_s / max(1, batch_size)


def capped_warmup(warmup: int, planned_steps: int) -> int:
    """The warm-up of a run planned to `planned_steps` (0: unplanned): at most `WARMUP_CAP` of them, so a short
    plan decays too."""
    if not planned_steps:
        return warmup
    return min(warmup, max(1, int(planned_steps * WARMUP_CAP)))


@dataclass
class Plan:
    """The run's length in optimizer steps, and the step at which progressive resizing switches to full size."""

    total_steps: int
    switch_step: int  # steps before it train at the low resolution (0 without progressive resizing)


def plan_steps(
    clock: BudgetClock,
    *,
    budget_s: float,
    elapsed_s: float,
    step: int,
    steps_per_epoch: int,
    max_steps: int,
    full_size: int,
    low_size: int | None = None,
    low_share: float = 0.0,
    switch_step: int = 0,
) -> Plan:
    """The most steps that fit in `budget_s` from `step` at `elapsed_s`, capped at `max_steps` (the recipe's epochs)."""
    usable = budget_s * MARGIN - elapsed_s
    full_step = clock.step_time(full_size)
    if full_step is None:
        raise ValueError("plan_steps needs at least one measured epoch")
    if low_size and step <= switch_step:
        # Still at the low resolution: it lasts until `low_share` of the budget has gone.
        low_step = clock.step_time(low_size) or full_step * (low_size / full_size) ** 2
        low_left = max(0.0, budget_s * low_share - elapsed_s)
        switch_step = step + int(low_left / low_step)
        usable -= (switch_step - step) * low_step
        start = switch_step
    else:
        start = step

    # Every epoch boundary still to come costs an epoch end (validation + checkpoints), the last one included.
    # The cost grows with the steps, so the most steps that fit is found by bisection: with short epochs (a small
    # training set) the epoch ends can outweigh the steps, where a fixed-point iteration would oscillate.
    def cost(steps: int) -> float:
        ends = (start + steps) // steps_per_epoch - step // steps_per_epoch + 1
        return steps * full_step + ends * clock.epoch_end_s

    low, high = 0, max(0, max_steps - start)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if cost(middle) <= usable else (low, middle - 1)
    total = max(step, min(max_steps, start + low))
    return Plan(total, min(switch_step, total) if low_size else 0)


@dataclass
class ScheduleAnchor:
    """Where the decay stood when the plan last changed: the rest of it is fitted to the new length."""

    step: int = 0  # the step at which the plan changed (the end of warm-up before any change)
    progress: float = 0.0  # the decay's progress (0..1) at that step

    def progress_at(self, step: int, warmup: int, total_steps: int) -> float:
        """Decay progress of `step`: linear from the anchor to 1 at `total_steps` (plain (step - warmup) / length)."""
        start = max(self.step, warmup)
        span = max(1, total_steps - start)
        return min(1.0, self.progress + (1.0 - self.progress) * max(0, step - start) / span)

    def moved_to(self, step: int, warmup: int, old_total: int) -> ScheduleAnchor:
        """The anchor for a plan that changes at `step` (the schedule so far, of length `old_total`, is kept)."""
        return ScheduleAnchor(step, self.progress_at(step, warmup, old_total))

    def to_dict(self) -> dict:
        """Plain values for the training state."""
        return asdict(self)
