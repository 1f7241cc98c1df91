"""Everything besides the weights that a resumed run needs to continue exactly: counters, optimizer, RNGs."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from vitkit.errors import UsageError
from vitkit.training.budget import BudgetClock, ScheduleAnchor

STATE_FILE = "training_state.pt"
# 4: a fifth section, the stream position; 3 (four sections) and 2 (one flat "progress" dict) are translated on load
STATE_VERSION = 4


@dataclass
class Progress:
    """Where the run is: the loader's position, the optimizer's step count, the planned length."""

    epoch: int = 0  # epochs completed; the current epoch's 0-based index
    batch: int = 0  # batches of the current epoch already trained on (the loader's start_batch)
    step: int = 0  # optimizer steps taken
    planned_epochs: int = 0  # the run's length (config epochs, or fewer under a time budget)
    images: int = 0  # training images processed
    epoch_stats: dict[str, float] = field(default_factory=dict)  # running sums of the current epoch's metrics
    # A time budget plans the run in steps (`vitkit.training.budget`); 0 while unplanned or without a budget.
    planned_steps: int = 0
    switch_step: int = 0  # progressive resizing under a budget: steps before it train at run.low_res_size
    schedule_anchor: ScheduleAnchor = field(default_factory=ScheduleAnchor)  # where the decay was last re-fitted
    budget_clock: BudgetClock = field(default_factory=BudgetClock)  # measured step and epoch-end times

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the anchor and the clock as their own `to_dict`)."""
        return {
            **asdict(self),
            "schedule_anchor": self.schedule_anchor.to_dict(),
            "budget_clock": self.budget_clock.to_dict(),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Progress:
        """Rebuild what `to_dict` returned (a state saved before the anchor and the clock starts without them)."""
        anchor = ScheduleAnchor(**(values.get("schedule_anchor") or {}))
        clock = BudgetClock.from_dict(values.get("budget_clock"))
        return cls(**{**values, "schedule_anchor": anchor, "budget_clock": clock})


@dataclass
class Scores:
    """The best checkpoint so far by the objective's metric, and the last epoch's validation."""

    best_value: float | None = None  # the objective's best_metric of the best checkpoint so far
    best_scores: dict[str, float] = field(default_factory=dict)  # every validation metric of that checkpoint
    best_epoch: int = 0
    best_weights: str = "raw"  # "raw" or "ema": which weights scored best_value
    last_eval: dict[str, float] = field(default_factory=dict)  # validation metrics of the last completed epoch


@dataclass
class Timers:
    """Where the run's time went, over every session up to the checkpoint."""

    elapsed_s: float = 0.0  # wall time of all sessions up to the checkpoint
    train_s: float = 0.0  # time inside training steps (excludes evaluation and checkpoints)
    data_wait_s: float = 0.0  # time spent waiting for the loader inside training steps
    augment_s: float = 0.0  # time spent in batched augmentation


@dataclass
class LogPosition:
    """How far metrics.csv had been written when the state was saved (a resumed run cuts it back to there)."""

    metrics_rows: int = 0


@dataclass
class StreamPosition:
    """Where a streamed source's global sample order stands (packed shards, `vitkit.data.shards`).

    The order is a function of (seed, epoch) over the data the index describes, so these numbers are the whole
    reader state: a resumed run reads on from `offset` exactly, on any world size with the same global batch.
    """

    seed: int = 0  # the order's seed (run.seed)
    epoch: int = 0  # the epoch whose order is being read
    offset: int = 0  # samples of that order already trained on, over all ranks (batches x the global batch)
    index: str = ""  # sha256 of the shard index the order is drawn over ("" for other sources)


SECTIONS: dict[str, type] = {
    "progress": Progress,
    "scores": Scores,
    "timers": Timers,
    "log": LogPosition,
    "stream": StreamPosition,
}


@dataclass
class RunState:
    """Everything a run has counted and measured so far, by concern (all of it is saved with each checkpoint)."""

    progress: Progress = field(default_factory=Progress)
    scores: Scores = field(default_factory=Scores)
    timers: Timers = field(default_factory=Timers)
    log: LogPosition = field(default_factory=LogPosition)
    stream: StreamPosition = field(default_factory=StreamPosition)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """One plain dict per section, safe for `torch.load(weights_only=True)`."""
        return {
            name: self.progress.to_dict() if name == "progress" else asdict(getattr(self, name)) for name in SECTIONS
        }

    @classmethod
    def from_dict(cls, sections: dict[str, dict[str, Any]]) -> RunState:
        """Rebuild what `to_dict` returned."""
        rebuilt = {name: section(**sections[name]) for name, section in SECTIONS.items() if section is not Progress}
        return cls(progress=Progress.from_dict(sections["progress"]), **rebuilt)


def upgrade_state(state: dict[str, Any]) -> dict[str, Any]:
    """An older training state in the current layout: version 2's flat "progress" dict split into the sections,
    and versions 2 and 3 given the stream section (no streamed source: a folder's position is progress.batch)."""
    if state.get("version") == 2:
        flat = dict(state["progress"])
        sections = {
            name: {f: flat.pop(f) for f in section.__dataclass_fields__ if f in flat}
            for name, section in SECTIONS.items()
        }
        if flat:
            raise UsageError(f"the version-2 training state has unknown progress fields {sorted(flat)}")
        state = {**state, **sections, "version": 3}
    if state.get("version") == 3:
        state = {**state, "stream": asdict(StreamPosition()), "version": STATE_VERSION}
    return state


def capture_rng() -> dict[str, Any]:
    """The state of every random generator the run draws from: python, numpy, torch CPU and CUDA."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put every generator back where `capture_rng` found it."""
    random.setstate(_as_tuples(state["python"]))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every GPU) from one number."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of one torchrun rank's own random draws (dropout, stochastic depth), from the seed and position."""
    return seed + 7919 * rank + step


def _as_tuples(value: Any) -> Any:
    """random.setstate needs tuples; a round trip through storage may have made them lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


def training_state(
    run_state: RunState,
    optimizer_state: dict[str, Any],
    scaler: torch.amp.GradScaler,
    ema: Any,
    objective_state: dict[str, Any],
    config: dict[str, Any],
) -> dict[str, Any]:
    """The object saved as `training_state.pt` next to the weights of checkpoints/last."""
    return {
        "version": STATE_VERSION,
        **run_state.to_dict(),  # progress, scores, timers, log, stream
        "optimizer": optimizer_state,
        "scaler": scaler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "objective": objective_state,  # trainable parts of the objective (e.g. a pre-training head)
        "rng": capture_rng(),
        "config": config,
    }


def load_training_state(path: Any) -> dict[str, Any]:
    """Read `training_state.pt` (version 2 to 4, in the current layout), refusing anything else with a clear message."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("version") not in (2, 3, STATE_VERSION):
        raise UsageError(
            f"{path} is not a vitkit training state (version 2 to {STATE_VERSION}); the run cannot be resumed"
        )
    return upgrade_state(state)
