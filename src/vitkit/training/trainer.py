"""The training loop, top to bottom: build, then for each epoch train steps, validate, checkpoint; summarise.

The loop does not know what it trains for: each augmented batch goes to the run's `Objective`
(`vitkit.training.objectives`), which returns the loss and the metrics to log, and which names the validation
metric that picks the best checkpoint. Where and how it computes (device, precision, threads, attention
kernel, DDP/FSDP under torchrun) is the `Runtime`, resolved once. A run directory holds `config.yaml`,
`metrics.csv`, `curves.png`, `summary.json` and `checkpoints/{last,best,ema}`; `last` resumes a killed run
exactly (on CPU with one process and the same threads: bit-identical weights).

`Trainer` holds the session, one typed part per concern, all built by `create_trainer`: the `Learner` (model,
objective, their wrapped step, optimizer, loss scaler, EMA), the `Inputs` (data, augmentations, evaluation
transform), the `Schedule` (length, learning rate and resolution in steps), the `RunState` (progress, scores,
timers, metrics log and stream position, saved with each checkpoint), its `CheckpointWriter` and `RunRecord`.
The loop's orchestrators (`run`, `train_epoch`, `finish_epoch`) take the session; the rest take what they use.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
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
    StepTimes,
    capped_warmup,
    estimate_epoch_end,
    plan_steps,
    replan_due,
)
from vitkit.training.checkpointing import CheckpointWriter
from vitkit.training.config import OptimConfig, RunConfig, TrainConfig, build_objective
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


@dataclass(frozen=True, kw_only=True)
class Learner:
    """What trains: the bare model (what is saved and evaluated), the objective, both wrapped for DDP/FSDP (what
    steps), the optimizer, the loss scaler and the weight EMA."""

    model: nn.Module
    objective: Objective
    step_module: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEma | None


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """The data, and the transforms that turn its uint8 batches into model inputs."""

    data: DatasetSplits
    augment: dict[int, TrainAugment]  # by training resolution
    eval_transform: EvalTransform


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """The run's length and learning-rate schedule in steps, and the training resolution at each step."""

    run: RunConfig
    img_size: int  # data.img_size: the full training resolution, and every evaluation's
    steps_per_epoch: int
    warmup: int  # the recipe's warm-up steps

    def total_steps(self, progress: Progress) -> int:
        """Optimizer steps in the whole (planned) run: a time budget's plan, `run.steps`, else whole epochs."""
        if progress.planned_steps:
            return progress.planned_steps
        whole_epochs = progress.planned_epochs * self.steps_per_epoch
        return min(whole_epochs, self.run.steps) if self.run.steps else whole_epochs

    def warmup_steps(self, progress: Progress) -> int:
        """Warm-up steps of the schedule: the recipe's, capped at a share of a time budget's planned steps."""
        return capped_warmup(self.warmup, progress.planned_steps)

    def learning_rate(self, optim: OptimConfig, progress: Progress) -> float:
        """The learning rate of the step about to be taken."""
        total = self.total_steps(progress)
        return learning_rate(progress.step, optim, self.warmup_steps(progress), total, progress.schedule_anchor)

    def resolution(self, progress: Progress, epoch: int, step: int = 0) -> int:
        """The training resolution at `epoch` and `step` (progressive resizing trains the first ones smaller).

        Without a budget the low-resolution phase is `run.low_res_epochs` epochs; under a budget it is the
        planned `switch_step` (every step while unplanned, in the first epoch).
        """
        if not self.run.low_res_size:
            return self.img_size
        if self.run.low_res_share > 0:
            low = not progress.planned_steps or step < progress.switch_step
        else:
            low = epoch < self.run.low_res_epochs
        return self.run.low_res_size if low else self.img_size


@dataclass(frozen=True, kw_only=True)
class Trainer:
    """The objects of one training session, each concern its own (built whole by `create_trainer`)."""

    config: TrainConfig
    run_dir: Path
    runtime: Runtime
    learner: Learner
    inputs: Inputs
    schedule: Schedule
    state: RunState  # the run's counters, updated in place as it trains (restored from checkpoints/last on resume)
    checkpoints: CheckpointWriter  # RUN_DIR/checkpoints
    record: RunRecord  # the opening lines and summary.json

    def save_last(self) -> None:
        """Write checkpoints/last with everything this session would need to resume."""
        self.state.stream = stream_position(self.state.progress, self.config.run, self.inputs.data.train.digest)
        learner = self.learner
        self.checkpoints.save_last(
            self.state, optimizer=learner.optimizer, scaler=learner.scaler, ema=learner.ema, objective=learner.objective
        )

    def write_summary(self, status: str, error: str | None = None) -> dict[str, Any]:
        """RUN_DIR/summary.json as the run stands now."""
        return self.record.write_summary(self.state, status, error)

    def train_step(self, batch: Batch) -> tuple[dict[str, float], float]:
        """One optimizer step on an augmented batch, as the loop takes it (its metrics and gradient norm); for
        benchmarks and experiments that drive the steps themselves. The learning rate is the optimizer's."""
        return train_step(self.learner, batch, self.runtime, self.config.optim, self.config.run)


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
    learner = create_learner(config, run_dir, resume, runtime, data, objective)
    steps_per_epoch = num_batches(data.train, config.run.batch_size, drop_last=True)
    # run.steps: the fewest epochs that cover them; the loop stops at exactly that step (Schedule.total_steps).
    epochs = math.ceil(config.run.steps / steps_per_epoch) if config.run.steps else config.run.epochs
    schedule = Schedule(
        run=config.run,
        img_size=config.data.img_size,
        steps_per_epoch=steps_per_epoch,
        warmup=warmup_steps(config.optim, steps_per_epoch),
    )
    checkpoints = CheckpointWriter(
        run_dir=run_dir,
        runtime=runtime,
        model=learner.model,
        class_names=data.class_names,
        config=config,
        objective_name=learner.objective.name,
    )
    # The augmentations are built before a resumed run's random generators are restored, as they always were.
    inputs = create_inputs(config, data, schedule.resolution(Progress(), 0), runtime.device)
    state = RunState(progress=Progress(planned_epochs=epochs))
    if resume:
        state = checkpoints.restore(
            optimizer=learner.optimizer, scaler=learner.scaler, ema=learner.ema, objective=learner.objective
        )
        check_stream(state.stream, stream_position(state.progress, config.run, data.train.digest), config)
    return Trainer(
        config=config,
        run_dir=run_dir,
        runtime=runtime,
        learner=learner,
        inputs=inputs,
        schedule=schedule,
        state=state,
        checkpoints=checkpoints,
        record=RunRecord(
            run_dir=run_dir,
            runtime=runtime,
            data=data,
            model_name=getattr(learner.model.config, "name", "") or config.model.name,
            params=sum(p.numel() for p in learner.model.parameters()),
            objective_name=learner.objective.name,
            best_metric=learner.objective.best_metric,
        ),
    )


def create_learner(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    runtime: Runtime,
    data: DatasetSplits,
    objective: Objective | None,
) -> Learner:
    """The model (fresh or from `model.pretrained`), its objective, the wrapped step, the optimizer and the EMA."""
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
    scaler = make_scaler(runtime.precision, runtime.device)
    return Learner(
        model=model, objective=objective, step_module=step_module, optimizer=optimizer, scaler=scaler, ema=ema
    )


def create_inputs(config: TrainConfig, data: DatasetSplits, first_size: int, device: torch.device) -> Inputs:
    """The data with a batched augmentation for each training resolution (`first_size` and data.img_size) and the
    evaluation transform."""
    num_classes, mean, std = len(data.class_names), config.data.mean, config.data.std
    augment = {
        size: TrainAugment(config.augment, size, mean, std, num_classes, seed=config.run.seed).to(device)
        for size in {first_size, config.data.img_size}
    }
    eval_size = config.data.eval_img_size or config.data.img_size  # FixRes: may be above the training size
    eval_transform = EvalTransform(eval_size, mean, std).to(device)
    return Inputs(data=data, augment=augment, eval_transform=eval_transform)


def stream_position(progress: Progress, run: RunConfig, index: str) -> StreamPosition:
    """Where the training order stands: (seed, epoch, global offset) and the identity `index` of the packed data."""
    return StreamPosition(run.seed, progress.epoch, progress.batch * run.batch_size, index)


def check_stream(saved: StreamPosition, now: StreamPosition, config: TrainConfig) -> None:
    """A resumed run over packed shards must read the same data in the same global batches, or it is refused."""
    if not saved.index:
        return  # not a streamed source (or a state from before version 4): progress.batch is the position
    if saved.index != now.index:
        raise UsageError(
            f"{config.data.path} is not the packed data this run started on (its index differs), so its "
            "sample order cannot be resumed; point --data at the original shards, or start a new run"
        )
    if saved.offset != now.offset or saved.seed != now.seed:
        raise UsageError(
            f"the checkpoint stands {saved.offset} samples into epoch {saved.epoch + 1} of seed {saved.seed}, which "
            f"global batches of {config.run.batch_size} with seed {now.seed} cannot continue exactly; resume "
            "with the run's own --batch-size and --seed (any number of processes)"
        )


def run(trainer: Trainer, progress_bar: bool | None = None) -> dict[str, Any]:
    """Train the remaining epochs, validating and checkpointing after each, then write the summary."""
    state, run_cfg, main = trainer.state.progress, trainer.config.run, trainer.runtime.dist.is_main
    schedule, objective = trainer.schedule, trainer.learner.objective
    clock = Clock(time.perf_counter(), trainer.state.timers.elapsed_s)
    columns = metric_columns(list(objective.train_metrics), list(objective.val_metrics))
    metrics = MetricsLog(trainer.run_dir, trainer.state.log.metrics_rows, state.step, columns) if main else None
    total = schedule.total_steps(state)
    reporter = ProgressReporter(total, state.step, run_cfg.log_every, progress_bar, enabled=main)
    trainer.record.announce(
        reporter,
        trainer.config,
        epochs=state.planned_epochs,
        steps_per_epoch=schedule.steps_per_epoch,
        warmup=schedule.warmup,
        total_steps=total,
    )
    reading = trainer.inputs.data.train.describe(run_cfg.batch_size, trainer.runtime.dist.world_size)
    if reading is not None:  # streamed sources: how the epoch is cut and shared (drop or pad)
        reporter.message(reading)
    try:
        while state.epoch < state.planned_epochs:
            resolution = schedule.resolution(state, state.epoch, state.step)
            step_times = train_epoch(trainer, metrics, reporter, clock)
            epoch_end = time.perf_counter()
            finish_epoch(trainer, metrics, reporter, clock)
            if run_cfg.time_budget_min > 0:
                # After each epoch, plan the rest of the run in steps from this epoch's steady-state step time and
                # the time its end took (`training.budget`).
                state.budget_clock.observe_epoch(resolution, step_times, time.perf_counter() - epoch_end)
                if apply_plan(state.budget_clock, state, schedule, trainer.runtime, reporter, clock.now()):
                    trainer.save_last()
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


class NonFiniteStep(ArithmeticError):
    """A training step's loss or gradient norm was NaN or infinite (the step was not taken)."""

    def __init__(self, what: str, loss: float, norm: float) -> None:
        super().__init__(what)
        self.what, self.loss, self.norm = what, loss, norm


def train_epoch(trainer: Trainer, metrics: MetricsLog | None, reporter: ProgressReporter, clock: Clock) -> list[float]:
    """The remaining batches of the current epoch, checkpointing every `save_every` steps; returns the duration of
    each step (the time budget's measure)."""
    state, timers, cfg, runtime = trainer.state.progress, trainer.state.timers, trainer.config, trainer.runtime
    learner, schedule = trainer.learner, trainer.schedule
    learner.step_module.train()
    frozen_to_eval(learner.model)
    loader = make_loader(
        trainer.inputs.data.train, cfg.run.batch_size, shuffle=True, seed=cfg.run.seed, epoch=state.epoch,
        start_batch=state.batch, drop_last=True, device=runtime.device, num_workers=cfg.data.num_workers,
        rank=runtime.dist.rank, world_size=runtime.dist.world_size, repeats=cfg.augment.repeats,
    )  # fmt: skip
    batches = iter(loader)
    step_times = StepTimes()
    budget_s = cfg.run.time_budget_min * 60
    budget = state.budget_clock if budget_s > 0 else None
    eval_passes = (2 if learner.ema is not None else 1) * TTA_PASSES.get(cfg.run.eval_tta, 6)
    while state.step < schedule.total_steps(state):  # run.steps may end the last epoch early
        start = time.perf_counter()
        try:
            images, labels = next(batches)
        except StopIteration:
            break
        loaded = time.perf_counter()
        augment = trainer.inputs.augment[schedule.resolution(state, state.epoch, state.step)]
        inputs, targets = augment(images, labels, state.step, runtime.dist.rank, runtime.dist.world_size)
        augmented = time.perf_counter()
        lr = schedule.learning_rate(cfg.optim, state)
        set_learning_rate(learner.optimizer, lr)
        try:
            values, grad_norm = train_step(learner, Batch(inputs, targets, labels), runtime, cfg.optim, cfg.run)
        except NonFiniteStep as bad:
            raise diverged(trainer, bad) from None
        end = time.perf_counter()
        batch = images.shape[0] * runtime.dist.world_size
        state.step, state.batch, state.images = state.step + 1, state.batch + 1, state.images + batch
        timers.train_s += end - start
        step_times.append(end - start)
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
        due = budget is not None and replan_due(len(step_times), state.planned_steps, schedule.steps_per_epoch)
        if due or (budget is not None and not state.budget_clock.epoch_end_s):
            # Until an epoch end has been measured, the out-of-time check reserves an estimate of it after every step.
            budget = plan_within_epoch(state, schedule, step_times, len(trainer.inputs.data.val), eval_passes)
            if len(step_times) == 1 and budget.epoch_end_s >= budget_s:
                reporter.message(
                    f"time budget {cfg.run.time_budget_min:g} min: one validation is estimated at "
                    f"{format_duration(budget.epoch_end_s)}, longer than the budget: training stops now and the run "
                    "ends after that validation; lower --img-size, a smaller model or fewer validation images"
                )
            if due:
                apply_plan(budget, state, schedule, runtime, reporter, clock.now())
        if budget is not None and budget.out_of_time(clock.now(), budget_s):
            # Slower than planned: stop here so that the last validation and checkpoint still fit in the budget.
            state.planned_steps, state.planned_epochs = state.step, state.epoch + 1
            reporter.message(f"time budget {cfg.run.time_budget_min:g} min: stopping at step {state.step}")
            break
        if cfg.run.save_every and state.step % cfg.run.save_every == 0 and state.batch < schedule.steps_per_epoch:
            checkpoint(trainer, metrics, clock)
    return step_times


def train_step(
    learner: Learner, batch: Batch, runtime: Runtime, optim: OptimConfig, run: RunConfig
) -> tuple[dict[str, float], float]:
    """Forward and backward over `run.grad_accum` micro-batches, clip, step; returns the batch's metrics and grad
    norm. Raises NonFiniteStep (the step not taken) when the loss or the gradient norm is not finite."""
    optimizer, scaler, step_module = learner.optimizer, learner.scaler, learner.step_module
    parts = run.grad_accum
    sums: dict[str, torch.Tensor] = {}
    for index, micro in enumerate(batch.chunk(parts)):
        # DDP synchronises gradients on the last micro-batch only.
        sync = index == parts - 1 or not hasattr(step_module, "no_sync")
        with (runtime.autocast(), runtime.attention_kernel(),
              step_module.no_sync() if not sync else contextlib.nullcontext()):  # fmt: skip
            out = step_module(micro)
            scaler.scale(out.loss / parts).backward()
        for key, value in out.metrics.items():
            sums[key] = sums.get(key, 0) + value.detach().float() / parts
    values = {k: v.item() for k, v in distributed.reduce_mean(sums, runtime).items()}
    scaler.unscale_(optimizer)
    parameters = [p for p in step_module.parameters() if p.grad is not None]
    limit = optim.clip_grad if optim.clip_grad > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(parameters, limit)
    grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP
    loss = values.get("loss", 0.0)
    # fp16 overflows are the GradScaler's to handle (it skips the step and lowers the scale); anything else stops.
    if not math.isfinite(loss) or (not math.isfinite(grad_norm) and not scaler.is_enabled()):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteStep("loss" if not math.isfinite(loss) else "gradient norm", loss, grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if learner.ema is not None:
        learner.ema.update(learner.model)
    return values, grad_norm


def diverged(trainer: Trainer, bad: NonFiniteStep) -> TrainingDiverged:
    """Record the divergence in summary.json; the error names the step, the checkpoint that is kept, what to try."""
    state, optim = trainer.state.progress, trainer.config.optim
    last = trainer.checkpoints.directory / "last"
    kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint had been written yet"
    trainer.write_summary("diverged", error=f"non-finite {bad.what} at step {state.step + 1}")
    hints = [f"a lower --lr (now {optim.lr:g})"]
    if trainer.runtime.precision != "fp32":
        hints.append("--precision fp32")
    hints.append("--clip-grad 1.0" if optim.clip_grad == 0 else f"a smaller --clip-grad (now {optim.clip_grad:g})")
    if optim.warmup_steps is None and optim.warmup_epochs < 5:
        hints.append("a longer --warmup-epochs")
    return TrainingDiverged(
        f"training stopped: the {bad.what} became non-finite at step {state.step + 1} (epoch {state.epoch + 1}; "
        f"loss {bad.loss:g}, gradient norm {bad.norm:g}); {kept}. Try {', '.join(hints)}"
    )


def finish_epoch(trainer: Trainer, metrics: MetricsLog | None, reporter: ProgressReporter, clock: Clock) -> None:
    """Validate raw (and EMA) weights, keep the best by the objective's metric, checkpoint, log the epoch."""
    state, scores, learner = trainer.state.progress, trainer.state.scores, trainer.learner
    objective, ema = learner.objective, learner.ema
    results = {"raw": validate(learner.model, learner, trainer.inputs, trainer.config.run, trainer.runtime)}
    if ema is not None:
        results["ema"] = validate(ema.model, learner, trainer.inputs, trainer.config.run, trainer.runtime)
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
        weights = learner.model if kind == "raw" or ema is None else ema.model
        trainer.checkpoints.save_weights("best", weights, kind, state, best)
    if ema is not None:
        trainer.checkpoints.save_weights("ema", ema.model, "ema", state, results["ema"])
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


def validate(model: nn.Module, learner: Learner, inputs: Inputs, run: RunConfig, runtime: Runtime) -> Validation:
    """The objective's validation metrics of `model` (the raw or the EMA weights) under the run's precision and
    attention kernel."""
    sharded = runtime.distributed == "fsdp"
    if sharded:
        learner.step_module.unshard()  # the root's parameters (embeddings, head); blocks gather themselves
    with runtime.attention_kernel():
        context = ValidationContext(
            inputs.data.val, inputs.eval_transform, run.eval_batch_size or run.batch_size, runtime.device,
            runtime.precision, runtime.dist.rank, runtime.dist.world_size,
        )  # fmt: skip
        result = learner.objective.validate(model, context)
    if sharded:
        learner.step_module.reshard()
    return result


def checkpoint(trainer: Trainer, metrics: MetricsLog | None, clock: Clock) -> None:
    """Mid-epoch checkpoint: flush the metrics, record how many rows belong to it, write checkpoints/last."""
    if metrics is not None:
        metrics.flush()
        trainer.state.log.metrics_rows = metrics.rows
    trainer.state.timers.elapsed_s = clock.now()
    trainer.save_last()


def plan_within_epoch(
    progress: Progress, schedule: Schedule, step_times: StepTimes, val_images: int, eval_passes: int
) -> BudgetClock:
    """The clock to plan from inside an epoch that is long beside the budget: its steps so far, and an epoch end not
    yet measured estimated from the validation set's size (`eval_passes` forward passes per image)."""
    resolution = schedule.resolution(progress, progress.epoch, max(0, progress.step - 1))
    clock = progress.budget_clock.with_partial_epoch(resolution, step_times, 0.0)
    if not clock.epoch_end_s:
        step_s = clock.step_s[resolution] if step_times else 0.0
        clock.epoch_end_s = estimate_epoch_end(step_s, schedule.run.batch_size, val_images, eval_passes)
    return clock


TTA_PASSES = {"none": 1, "flip": 2}  # forward passes per validation image (multi-crop: 6)


def apply_plan(
    budget: BudgetClock,
    progress: Progress,
    schedule: Schedule,
    runtime: Runtime,
    reporter: ProgressReporter,
    now: float,
) -> bool:
    """Plan the rest of the run from `budget`'s times at `now` (seconds of the run so far) and adopt the main rank's
    plan; True when it changed. The learning-rate decay is re-fitted to the new length from where it stands."""
    run, steps_per_epoch = schedule.run, schedule.steps_per_epoch
    plan = plan_steps(
        budget, budget_s=run.time_budget_min * 60, elapsed_s=now, step=progress.step,
        steps_per_epoch=steps_per_epoch, max_steps=run.epochs * steps_per_epoch,
        full_size=schedule.img_size, low_size=run.low_res_size if run.low_res_share else None,
        low_share=run.low_res_share, switch_step=progress.switch_step if progress.planned_steps else 10**12,
    )  # fmt: skip
    plan = distributed.broadcast_object(plan, runtime)
    old_total = schedule.total_steps(progress)
    changed = plan.total_steps != old_total or not progress.planned_steps
    if changed:
        progress.schedule_anchor = progress.schedule_anchor.moved_to(
            progress.step, schedule.warmup_steps(progress), old_total
        )
        progress.planned_steps, progress.switch_step = plan.total_steps, plan.switch_step
        # An epoch cut short by the last plan leaves its steps to one more (partial) epoch when the new plan is longer.
        more = progress.epoch + 1 if plan.total_steps > progress.step else progress.epoch
        if progress.batch:  # planned within an epoch: the current one is not over
            more = progress.epoch + 1
        progress.planned_epochs = max(more, math.ceil(plan.total_steps / steps_per_epoch))
        reporter.set_total(schedule.total_steps(progress))
    left = (plan.total_steps - progress.step) * (budget.step_time(schedule.img_size) or 0.0)
    switch = f", {run.low_res_size}px until step {plan.switch_step}" if run.low_res_share else ""
    within = f" (within epoch {progress.epoch + 1}, after {progress.batch} steps)" if progress.batch else ""
    reporter.message(
        f"time budget {run.time_budget_min:g} min{within}: {format_duration(now)} used; {plan.total_steps} "
        f"steps planned (~{progress.planned_epochs} epochs{switch}), about {format_duration(left)} of training left"
    )
    return changed
