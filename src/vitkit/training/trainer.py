"""The training loop, top to bottom: build, then for each epoch train steps, validate, checkpoint; summarise.

The loop does not know what it trains for: each augmented batch goes to the run's `Objective`
(`vitkit.training.objectives`), which returns the loss and the metrics to log, and which names the validation
metric that picks the best checkpoint. Where and how it computes (device, precision, threads, attention
kernel, DDP/FSDP under torchrun) is the `Runtime`, resolved once. A run directory holds `config.yaml`,
`metrics.csv`, `curves.png`, `summary.json` and `checkpoints/{last,best,ema}`; `last` resumes a killed run
exactly (on CPU with one process and the same threads: bit-identical weights).

`Trainer` holds the session's objects; the checkpoints are written by its `CheckpointWriter`, the opening lines
and summary.json by its `RunRecord`, each given only what it records. The run's counters are a `RunState` of
four sections: progress, scores, timers and the metrics log position.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitkit.checkpoints import create_model
from vitkit.data import DatasetSplits, EvalTransform, TrainAugment, load_dataset, make_loader, num_batches
from vitkit.errors import UsageError
from vitkit.training import checkpointing, distributed
from vitkit.training.budget import (
    BudgetClock,
    ScheduleAnchor,
    capped_warmup,
    estimate_epoch_end,
    plan_steps,
    replan_due,
)
from vitkit.training.checkpointing import CheckpointWriter
from vitkit.training.config import TrainConfig, build_objective
from vitkit.training.ema import ModelEma
from vitkit.training.metrics import MetricsLog, metric_columns, plot_curves
from vitkit.training.objectives import Batch, Objective, ObjectiveStep, Validation, ValidationContext
from vitkit.training.optim import (
    build_optimizer,
    freeze,
    frozen_to_eval,
    learning_rate,
    set_learning_rate,
    warmup_steps,
)
from vitkit.training.preflight import check_run
from vitkit.training.progress import ProgressReporter, format_duration
from vitkit.training.report import RunRecord
from vitkit.training.rundir import check_run_dir, prepare_run_dir, resume_config
from vitkit.training.runtime import Runtime, make_scaler
from vitkit.training.state import Progress, RunState, StreamPosition, rank_seed, seed_everything


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; the message says at which step and what to try."""


@dataclass(kw_only=True)
class Trainer:
    """The objects of one training session (built by `create_trainer`)."""

    config: TrainConfig
    run_dir: Path
    runtime: Runtime
    data: DatasetSplits
    model: nn.Module  # the bare model: what is saved and evaluated
    objective: Objective
    step_module: nn.Module  # model + objective, wrapped for DDP/FSDP: what trains
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    state: RunState
    steps_per_epoch: int
    warmup: int
    checkpoints: CheckpointWriter
    record: RunRecord
    augment: dict[int, TrainAugment] = field(default_factory=dict)  # by training resolution
    eval_transform: EvalTransform | None = None
    step_times: list[float] = field(default_factory=list)  # this epoch's step durations (the budget's measure)

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the whole (planned) run: a time budget's plan, `run.steps`, else whole epochs."""
        if self.state.progress.planned_steps:
            return self.state.progress.planned_steps
        whole_epochs = self.state.progress.planned_epochs * self.steps_per_epoch
        return min(whole_epochs, self.config.run.steps) if self.config.run.steps else whole_epochs

    @property
    def schedule_warmup(self) -> int:
        """Warm-up steps of the schedule: the recipe's, capped at a share of a time budget's planned steps."""
        return capped_warmup(self.warmup, self.state.progress.planned_steps)

    @property
    def schedule_anchor(self) -> ScheduleAnchor:
        """Where the learning-rate decay was re-fitted to a new plan (the plain schedule when never)."""
        return ScheduleAnchor(**self.state.progress.schedule_anchor)

    @property
    def checkpoint_dir(self) -> Path:
        """RUN_DIR/checkpoints."""
        return self.checkpoints.directory

    def save_last(self) -> None:
        """Write checkpoints/last with everything this session would need to resume."""
        self.state.stream = stream_position(self)
        self.checkpoints.save_last(
            self.state, optimizer=self.optimizer, scaler=self.scaler, ema=self.ema, objective=self.objective
        )

    def write_summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        """RUN_DIR/summary.json as the run stands now."""
        return self.record.write_summary(self.state, status, error)

    def resolution(self, epoch: int, step: int = 0) -> int:
        """The training resolution at `epoch` and `step` (progressive resizing trains the first ones smaller).

        Without a budget the low-resolution phase is `run.low_res_epochs` epochs; under a budget it is the
        planned `switch_step` (every step while unplanned, in the first epoch).
        """
        run, progress = self.config.run, self.state.progress
        if not run.low_res_size:
            return self.config.data.img_size
        if run.low_res_share > 0:
            low = not progress.planned_steps or step < progress.switch_step
        else:
            low = epoch < run.low_res_epochs
        return run.low_res_size if low else self.config.data.img_size


def train(
    config: TrainConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    overrides: dict[str, Any] | None = None,
    progress_bar: bool | None = None,
    objective: Objective | None = None,
) -> dict[str, Any]:
    """Train `config` into `run_dir` (or continue the run there with `resume`) and return its summary.

    `objective` replaces the one the config names (e.g. distillation from any `nn.Module` teacher built in
    Python). Raises TrainingDiverged when the loss becomes non-finite (the last good checkpoint is kept).
    """
    run_dir = Path(run_dir)
    config = resume_config(run_dir, overrides or {}) if resume else (config or TrainConfig())
    if not resume:
        check_run_dir(run_dir, overwrite)
    trainer = create_trainer(config, run_dir, resume=resume, objective=objective)  # a bad data path fails here
    finished = False
    try:
        if not resume and trainer.runtime.dist.is_main:
            prepare_run_dir(run_dir, overwrite, config)
        trainer.runtime.dist.barrier()
        summary = run(trainer, progress_bar)
        finished = True
        return summary
    finally:
        trainer.runtime.close(wait=finished)  # a failed rank must not wait for the others


def create_trainer(
    config: TrainConfig, run_dir: Path, resume: bool = False, objective: Objective | None = None
) -> Trainer:
    """Resolve the runtime, load the data, build model, objective, optimizer and EMA; restore them on resume."""
    runtime = Runtime.create(config.runtime)
    seed_everything(config.run.seed)
    data = load_dataset(config.data)
    section = config.model
    # With `pretrained` the checkpoint fixes the architecture: the recipe's model name only labels the run.
    model = create_model(
        None if section.pretrained else section.name,
        pretrained=section.pretrained or None,
        new_head=bool(section.pretrained) and section.new_head,
        num_classes=len(data.class_names),
        img_size=config.data.img_size,
        **section.overrides,
    ).to(runtime.device)
    model.class_names = list(data.class_names)
    objective = (objective or build_objective(config, model, len(data.class_names))).to(runtime.device)
    check_run(config, data, model, objective, runtime)
    freeze(model, config.optim)  # before DDP wraps the model: it only synchronises what requires gradients
    if resume and runtime.attention == "auto":
        runtime.attention = checkpointing.recorded_attention(run_dir) or "auto"
    runtime.choose_attention_for(model, config.run.batch_size // (config.run.grad_accum * runtime.dist.world_size))
    step_module = distributed.wrap(ObjectiveStep(model, objective), runtime, objective.find_unused_parameters)
    if runtime.compile:
        # The whole step, not model.forward: objectives that call forward_features (distillation, masked patches)
        # and their losses are compiled too. Compiled outside DDP/FSDP, as torch's DDPOptimizer expects.
        step_module = torch.compile(step_module)
    if runtime.dist.enabled:
        seed_everything(rank_seed(config.run.seed, runtime.dist.rank))  # same weights everywhere, own dropout
    optimizer = build_optimizer(model, objective, config.optim, runtime.precision)
    if config.optim.ema_decay > 0 and runtime.distributed == "fsdp":
        raise UsageError("optim.ema_decay needs the whole model on every rank; it cannot be used with FSDP")
    ema = ModelEma(model, config.optim.ema_decay) if config.optim.ema_decay > 0 else None
    steps_per_epoch = num_batches(data.train, config.run.batch_size, drop_last=True)
    # run.steps: the fewest epochs that cover them; the loop stops at exactly that step (Trainer.total_steps).
    epochs = math.ceil(config.run.steps / steps_per_epoch) if config.run.steps else config.run.epochs
    checkpoints = CheckpointWriter(
        run_dir=run_dir,
        runtime=runtime,
        model=model,
        class_names=data.class_names,
        config=config,
        objective_name=objective.name,
    )
    record = RunRecord(
        run_dir=run_dir,
        runtime=runtime,
        data=data,
        model_name=getattr(model.config, "name", "") or config.model.name,
        params=sum(p.numel() for p in model.parameters()),
        objective_name=objective.name,
        best_metric=objective.best_metric,
    )
    trainer = Trainer(
        config=config,
        run_dir=run_dir,
        runtime=runtime,
        data=data,
        model=model,
        objective=objective,
        step_module=step_module,
        optimizer=optimizer,
        scaler=make_scaler(runtime.precision, runtime.device),
        ema=ema,
        state=RunState(progress=Progress(planned_epochs=epochs)),
        steps_per_epoch=steps_per_epoch,
        warmup=warmup_steps(config.optim, steps_per_epoch),
        checkpoints=checkpoints,
        record=record,
    )
    num_classes, mean, std = len(data.class_names), config.data.mean, config.data.std
    for size in {trainer.resolution(0), config.data.img_size}:
        augment = TrainAugment(config.augment, size, mean, std, num_classes, seed=config.run.seed)
        trainer.augment[size] = augment.to(runtime.device)
    eval_size = config.data.eval_img_size or config.data.img_size  # FixRes: may be above the training size
    trainer.eval_transform = EvalTransform(eval_size, mean, std).to(runtime.device)
    if resume:
        trainer.state = checkpoints.restore(optimizer=optimizer, scaler=trainer.scaler, ema=ema, objective=objective)
        check_stream(trainer)
    return trainer


def stream_position(trainer: Trainer) -> StreamPosition:
    """Where the training order stands: (seed, epoch, global offset) and the identity of the packed data."""
    progress = trainer.state.progress
    offset = progress.batch * trainer.config.run.batch_size
    return StreamPosition(trainer.config.run.seed, progress.epoch, offset, trainer.data.train.digest)


def check_stream(trainer: Trainer) -> None:
    """A resumed run over packed shards must read the same data in the same global batches, or it is refused."""
    saved, now = trainer.state.stream, stream_position(trainer)
    if not saved.index:
        return  # not a streamed source (or a state from before version 4): progress.batch is the position
    if saved.index != now.index:
        raise UsageError(
            f"{trainer.config.data.path} is not the packed data this run started on (its index differs), so its "
            "sample order cannot be resumed; point --data at the original shards, or start a new run"
        )
    if saved.offset != now.offset or saved.seed != now.seed:
        raise UsageError(
            f"the checkpoint stands {saved.offset} samples into epoch {saved.epoch + 1} of seed {saved.seed}, which "
            f"global batches of {trainer.config.run.batch_size} with seed {now.seed} cannot continue exactly; resume "
            "with the run's own --batch-size and --seed (any number of processes)"
        )


def run(trainer: Trainer, progress_bar: bool | None = None) -> dict[str, Any]:
    """Train the remaining epochs, validating and checkpointing after each, then write the summary."""
    state, run_cfg, main = trainer.state.progress, trainer.config.run, trainer.runtime.dist.is_main
    clock = Clock(time.perf_counter(), trainer.state.timers.elapsed_s)
    objective = trainer.objective
    columns = metric_columns(list(objective.train_metrics), list(objective.val_metrics))
    metrics = MetricsLog(trainer.run_dir, trainer.state.log.metrics_rows, state.step, columns) if main else None
    reporter = ProgressReporter(trainer.total_steps, state.step, run_cfg.log_every, progress_bar, enabled=main)
    trainer.record.announce(
        reporter,
        trainer.config,
        epochs=state.planned_epochs,
        steps_per_epoch=trainer.steps_per_epoch,
        warmup=trainer.warmup,
        total_steps=trainer.total_steps,
    )
    reading = trainer.data.train.describe(run_cfg.batch_size, trainer.runtime.dist.world_size)
    if reading is not None:  # streamed sources: how the epoch is cut and shared (drop or pad)
        reporter.message(reading)
    try:
        while state.epoch < state.planned_epochs:
            resolution = trainer.resolution(state.epoch, state.step)
            train_epoch(trainer, metrics, reporter, clock)
            epoch_end = time.perf_counter()
            finish_epoch(trainer, metrics, reporter, clock)
            if run_cfg.time_budget_min > 0:
                plan_for_budget(trainer, reporter, clock, resolution, time.perf_counter() - epoch_end)
    finally:
        if metrics is not None:
            metrics.close()
        reporter.close()
    trainer.state.timers.elapsed_s = clock.now()
    return trainer.write_summary("finished")


@dataclass
class Clock:
    """Wall time of the whole run: this session's start plus what earlier sessions (before a resume) took."""

    session_start: float
    before: float

    def now(self) -> float:
        """Seconds of the run so far."""
        return self.before + time.perf_counter() - self.session_start


def train_epoch(trainer: Trainer, metrics: MetricsLog | None, reporter: ProgressReporter, clock: Clock) -> None:
    """The remaining batches of the current epoch, checkpointing every `save_every` steps."""
    state, timers, cfg, runtime = trainer.state.progress, trainer.state.timers, trainer.config, trainer.runtime
    trainer.step_module.train()
    frozen_to_eval(trainer.model)
    loader = make_loader(
        trainer.data.train, cfg.run.batch_size, shuffle=True, seed=cfg.run.seed, epoch=state.epoch,
        start_batch=state.batch, drop_last=True, device=runtime.device, num_workers=cfg.data.num_workers,
        rank=runtime.dist.rank, world_size=runtime.dist.world_size, repeats=cfg.augment.repeats,
    )  # fmt: skip
    batches = iter(loader)
    trainer.step_times = []
    budget_s = cfg.run.time_budget_min * 60
    budget = BudgetClock.from_dict(state.budget_clock) if budget_s > 0 else None
    while state.step < trainer.total_steps:  # run.steps may end the last epoch early
        start = time.perf_counter()
        try:
            images, labels = next(batches)
        except StopIteration:
            break
        loaded = time.perf_counter()
        augment = trainer.augment[trainer.resolution(state.epoch, state.step)]
        inputs, targets = augment(images, labels, state.step, runtime.dist.rank, runtime.dist.world_size)
        augmented = time.perf_counter()
        lr = learning_rate(state.step, cfg.optim, trainer.schedule_warmup, trainer.total_steps, trainer.schedule_anchor)
        set_learning_rate(trainer.optimizer, lr)
        values, grad_norm = train_step(trainer, Batch(inputs, targets, labels))
        end = time.perf_counter()
        batch = images.shape[0] * runtime.dist.world_size
        state.step, state.batch, state.images = state.step + 1, state.batch + 1, state.images + batch
        timers.train_s += end - start
        trainer.step_times.append(end - start)
        timers.data_wait_s += loaded - start
        timers.augment_s += augmented - loaded
        sums = state.epoch_stats or {"seen": 0.0}
        sums = {k: sums.get(k, 0.0) + values.get(k, 1.0) * batch for k in ("seen", *values)}
        state.epoch_stats = sums
        row = {**values, "lr": lr, "grad_norm": grad_norm, "images_per_s": batch / (end - start),
               "data_wait_share": (loaded - start) / (end - start)}  # fmt: skip
        if metrics is not None:
            metrics.write("step", epoch=state.epoch + 1, step=state.step, time_s=clock.now(), **row)
        reporter.update(state.step, state.epoch + 1, state.planned_epochs, row)
        if budget is not None and replan_due(len(trainer.step_times), state.planned_steps, trainer.steps_per_epoch):
            budget = plan_within_epoch(trainer, reporter, clock)
        if budget is not None and budget.out_of_time(clock.now(), budget_s):
            # Slower than planned: stop here so that the last validation and checkpoint still fit in the budget.
            state.planned_steps, state.planned_epochs = state.step, state.epoch + 1
            reporter.message(f"time budget {cfg.run.time_budget_min:g} min: stopping at step {state.step}")
            break
        if cfg.run.save_every and state.step % cfg.run.save_every == 0 and state.batch < trainer.steps_per_epoch:
            checkpoint(trainer, metrics, clock)


def train_step(trainer: Trainer, batch: Batch) -> tuple[dict[str, float], float]:
    """Forward and backward over `grad_accum` micro-batches, clip, step; returns the batch's metrics and grad norm."""
    cfg, runtime, optimizer, scaler = trainer.config, trainer.runtime, trainer.optimizer, trainer.scaler
    parts = cfg.run.grad_accum
    sums: dict[str, torch.Tensor] = {}
    for index, micro in enumerate(batch.chunk(parts)):
        # DDP synchronises gradients on the last micro-batch only.
        sync = index == parts - 1 or not hasattr(trainer.step_module, "no_sync")
        with (runtime.autocast(), runtime.attention_kernel(),
              trainer.step_module.no_sync() if not sync else contextlib.nullcontext()):  # fmt: skip
            out = trainer.step_module(micro)
            scaler.scale(out.loss / parts).backward()
        for key, value in out.metrics.items():
            sums[key] = sums.get(key, 0) + value.detach().float() / parts
    values = {k: v.item() for k, v in distributed.reduce_mean(sums, runtime).items()}
    scaler.unscale_(optimizer)
    parameters = [p for p in trainer.step_module.parameters() if p.grad is not None]
    limit = cfg.optim.clip_grad if cfg.optim.clip_grad > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(parameters, limit)
    grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP
    loss = values.get("loss", 0.0)
    # fp16 overflows are the GradScaler's to handle (it skips the step and lowers the scale); anything else stops.
    if not math.isfinite(loss) or (not math.isfinite(grad_norm) and not scaler.is_enabled()):
        optimizer.zero_grad(set_to_none=True)
        raise diverged(trainer, "loss" if not math.isfinite(loss) else "gradient norm", loss, grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if trainer.ema is not None:
        trainer.ema.update(trainer.model)
    return values, grad_norm


def diverged(trainer: Trainer, what: str, loss: float, norm: float) -> TrainingDiverged:
    """The error for a non-finite loss or gradient, naming the step and the checkpoint that is kept."""
    state, cfg = trainer.state.progress, trainer.config
    last = trainer.checkpoint_dir / "last"
    kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint had been written yet"
    trainer.write_summary("diverged", error=f"non-finite {what} at step {state.step + 1}")
    hints = [f"a lower --lr (now {cfg.optim.lr:g})"]
    if trainer.runtime.precision != "fp32":
        hints.append("--precision fp32")
    hints.append(
        "--clip-grad 1.0" if cfg.optim.clip_grad == 0 else f"a smaller --clip-grad (now {cfg.optim.clip_grad:g})"
    )
    if cfg.optim.warmup_steps is None and cfg.optim.warmup_epochs < 5:
        hints.append("a longer --warmup-epochs")
    return TrainingDiverged(
        f"training stopped: the {what} became non-finite at step {state.step + 1} (epoch {state.epoch + 1}; "
        f"loss {loss:g}, gradient norm {norm:g}); {kept}. Try {', '.join(hints)}"
    )


def finish_epoch(trainer: Trainer, metrics: MetricsLog | None, reporter: ProgressReporter, clock: Clock) -> None:
    """Validate raw (and EMA) weights, keep the best by the objective's metric, checkpoint, log the epoch."""
    state, scores, objective = trainer.state.progress, trainer.state.scores, trainer.objective
    results = {"raw": validate(trainer, trainer.model)}
    if trainer.ema is not None:
        results["ema"] = validate(trainer, trainer.ema.model)
    sums = state.epoch_stats or {"seen": 1.0}
    state.epoch, state.batch, state.epoch_stats = state.epoch + 1, 0, {}
    metric = objective.best_metric
    kind, best = max(results.items(), key=lambda item: item[1][metric] * (1 if objective.higher_is_better else -1))
    improved = objective.is_better(best[metric], scores.best_value)
    if improved:
        scores.best_value, scores.best_scores, scores.best_epoch, scores.best_weights = (
            best[metric],
            best.values,
            state.epoch,
            kind,
        )
    scores.last_eval = {
        f"{'' if name == 'raw' else 'ema_'}val_{key}": value
        for name, result in results.items()
        for key, value in result.values.items()
    }
    train_means = {k: v / max(1.0, sums["seen"]) for k, v in sums.items() if k != "seen"}
    if metrics is not None:
        metrics.write(
            "epoch", epoch=state.epoch, step=state.step, time_s=clock.now(), **train_means, **scores.last_eval
        )
        metrics.flush()
        trainer.state.log.metrics_rows = metrics.rows
    trainer.state.timers.elapsed_s = clock.now()
    # best before last: a kill between the two repeats this epoch and rewrites the same best checkpoint.
    if improved:
        weights = trainer.model if kind == "raw" else trainer.ema.model
        trainer.checkpoints.save_weights("best", weights, kind, state, best)
    if trainer.ema is not None:
        trainer.checkpoints.save_weights("ema", trainer.ema.model, "ema", state, results["ema"])
    trainer.save_last()
    if metrics is not None:
        plot_curves(metrics.path, trainer.run_dir / "curves.png")
    shown = " ".join(f"{k} {v:.4g}" for k, v in train_means.items())
    val_text = " ".join(f"{k} {v:.4g}" for k, v in results["raw"].values.items())
    ema_text = f" | EMA {metric} {results['ema'][metric]:.4g}" if "ema" in results else ""
    reporter.message(
        f"epoch {state.epoch}/{state.planned_epochs}: train {shown} | val {val_text}{ema_text} | best {metric} "
        f"{scores.best_value:.4g} (epoch {scores.best_epoch}) | {format_duration(trainer.state.timers.elapsed_s)} "
        "elapsed"
    )


def validate(trainer: Trainer, model: nn.Module) -> Validation:
    """The objective's validation metrics of `model` under the run's precision and attention kernel."""
    cfg, runtime = trainer.config, trainer.runtime
    sharded = runtime.distributed == "fsdp"
    if sharded:
        trainer.step_module.unshard()  # the root's parameters (embeddings, head); blocks gather themselves
    with runtime.attention_kernel():
        context = ValidationContext(
            trainer.data.val, trainer.eval_transform, cfg.run.eval_batch_size or cfg.run.batch_size, runtime.device,
            runtime.precision, runtime.dist.rank, runtime.dist.world_size,
        )  # fmt: skip
        result = trainer.objective.validate(model, context)
    if sharded:
        trainer.step_module.reshard()
    return result


def checkpoint(trainer: Trainer, metrics: MetricsLog | None, clock: Clock) -> None:
    """Mid-epoch checkpoint: flush the metrics, record how many rows belong to it, write checkpoints/last."""
    if metrics is not None:
        metrics.flush()
        trainer.state.log.metrics_rows = metrics.rows
    trainer.state.timers.elapsed_s = clock.now()
    trainer.save_last()


def plan_for_budget(
    trainer: Trainer, reporter: ProgressReporter, clock: Clock, resolution: int, epoch_end_s: float
) -> None:
    """After each epoch, plan the rest of the run in steps to end within `time_budget_min` (`training.budget`).

    The plan comes from this epoch's steady-state step time and the time its end took; the learning-rate
    decay is re-fitted to the new length from where it stands, and every rank takes the main rank's plan.
    """
    budget = BudgetClock.from_dict(trainer.state.progress.budget_clock)
    budget.observe_epoch(resolution, trainer.step_times, epoch_end_s)
    trainer.state.progress.budget_clock = budget.to_dict()
    if apply_plan(trainer, reporter, clock, budget):
        trainer.save_last()


def plan_within_epoch(trainer: Trainer, reporter: ProgressReporter, clock: Clock) -> BudgetClock:
    """Plan again inside an epoch that is long beside the budget, from its steps so far; returns the clock that
    the out-of-time check uses (an epoch end not yet measured is estimated from the validation set's size)."""
    cfg, progress = trainer.config, trainer.state.progress
    resolution = trainer.resolution(progress.epoch, max(0, progress.step - 1))
    recorded = BudgetClock.from_dict(progress.budget_clock)
    step_s = statistics.median(trainer.step_times) if trainer.step_times else 0.0
    passes = (2 if trainer.ema is not None else 1) * TTA_PASSES.get(cfg.run.eval_tta, 6)
    end_s = estimate_epoch_end(step_s, cfg.run.batch_size, len(trainer.data.val), passes)
    budget = recorded.with_partial_epoch(resolution, trainer.step_times, end_s)
    apply_plan(trainer, reporter, clock, budget)
    return budget


TTA_PASSES = {"none": 1, "flip": 2}  # forward passes per validation image (multi-crop: 6)


def apply_plan(trainer: Trainer, reporter: ProgressReporter, clock: Clock, budget: BudgetClock) -> bool:
    """Plan the rest of the run from `budget`'s times and adopt the main rank's plan; True when it changed.

    The learning-rate decay is re-fitted to the new length from where it stands (`ScheduleAnchor`).
    """
    progress, cfg = trainer.state.progress, trainer.config.run
    plan = plan_steps(
        budget, budget_s=cfg.time_budget_min * 60, elapsed_s=clock.now(), step=progress.step,
        steps_per_epoch=trainer.steps_per_epoch, max_steps=cfg.epochs * trainer.steps_per_epoch,
        full_size=trainer.config.data.img_size, low_size=cfg.low_res_size if cfg.low_res_share else None,
        low_share=cfg.low_res_share, switch_step=progress.switch_step if progress.planned_steps else 10**12,
    )  # fmt: skip
    plan = distributed.broadcast_object(plan, trainer.runtime)
    old_total = trainer.total_steps
    changed = plan.total_steps != old_total or not progress.planned_steps
    if changed:
        anchor = trainer.schedule_anchor.moved_to(progress.step, trainer.schedule_warmup, old_total)
        progress.schedule_anchor = anchor.to_dict()
        progress.planned_steps, progress.switch_step = plan.total_steps, plan.switch_step
        # An epoch cut short by the last plan leaves its steps to one more (partial) epoch when the new plan is longer.
        more = progress.epoch + 1 if plan.total_steps > progress.step else progress.epoch
        if progress.batch:  # planned within an epoch: the current one is not over
            more = progress.epoch + 1
        progress.planned_epochs = max(more, math.ceil(plan.total_steps / trainer.steps_per_epoch))
        reporter.set_total(trainer.total_steps)
    left = (plan.total_steps - progress.step) * (budget.step_time(trainer.config.data.img_size) or 0.0)
    switch = f", {cfg.low_res_size}px until step {plan.switch_step}" if cfg.low_res_share else ""
    within = f" (within epoch {progress.epoch + 1}, after {progress.batch} steps)" if progress.batch else ""
    reporter.message(
        f"time budget {cfg.time_budget_min:g} min{within}: {format_duration(clock.now())} used; {plan.total_steps} "
        f"steps planned (~{progress.planned_epochs} epochs{switch}), about {format_duration(left)} of training left"
    )
    return changed
