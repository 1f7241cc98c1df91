"""The training loop, top to bottom: build, then for each epoch train steps, validate, checkpoint; summarise.

The loop does not know what it trains for: each augmented batch goes to the run's `Objective`
(`vitkit.training.objectives`), which returns the loss and the metrics to log, and which names the validation
metric that picks the best checkpoint. Where and how it computes (device, precision, threads, attention
kernel, DDP/FSDP under torchrun) is the `Runtime`, resolved once. A run directory holds `config.yaml`,
`metrics.csv`, `curves.png`, `summary.json` and `checkpoints/{last,best,ema}`; `last` resumes a killed run
exactly (on CPU with one process and the same threads: bit-identical weights).
"""

from __future__ import annotations

import contextlib
import math
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
from vitkit.training.config import ModelConfig, TrainConfig
from vitkit.training.ema import ModelEma
from vitkit.training.metrics import MetricsLog, metric_columns, plot_curves
from vitkit.training.objectives import Batch, Objective, ObjectiveStep, Validation, build_objective
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
from vitkit.training.report import announce, write_summary
from vitkit.training.rundir import check_run_dir, prepare_run_dir, resume_config
from vitkit.training.runtime import Runtime, make_scaler
from vitkit.training.state import RunState, rank_seed, seed_everything


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; the message says at which step and what to try."""


@dataclass
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
    augment: dict[int, TrainAugment] = field(default_factory=dict)  # by training resolution
    eval_transform: EvalTransform | None = None

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the whole (planned) run: `run.steps` when set, else whole epochs."""
        whole_epochs = self.state.planned_epochs * self.steps_per_epoch
        return min(whole_epochs, self.config.run.steps) if self.config.run.steps else whole_epochs

    @property
    def checkpoint_dir(self) -> Path:
        """RUN_DIR/checkpoints."""
        return self.run_dir / "checkpoints"

    def resolution(self, epoch: int) -> int:
        """The training resolution of `epoch` (progressive resizing trains the first epochs smaller)."""
        run = self.config.run
        return run.low_res_size if run.low_res_size and epoch < run.low_res_epochs else self.config.data.img_size


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


def build_model(config: ModelConfig, num_classes: int, img_size: int) -> nn.Module:
    """A fresh model from the model section, or one initialised from `pretrained` (head and E_pos adapted)."""
    if config.pretrained:
        return create_model(
            pretrained=config.pretrained,
            num_classes=num_classes,
            img_size=img_size,
            new_head=config.new_head,
            **config.overrides,
        )
    return create_model(config.name, num_classes=num_classes, img_size=img_size, **config.overrides)


def create_trainer(
    config: TrainConfig, run_dir: Path, resume: bool = False, objective: Objective | None = None
) -> Trainer:
    """Resolve the runtime, load the data, build model, objective, optimizer and EMA; restore them on resume."""
    runtime = Runtime.create(config.runtime)
    seed_everything(config.run.seed)
    data = load_dataset(config.data)
    model = build_model(config.model, len(data.class_names), config.data.img_size).to(runtime.device)
    model.class_names = list(data.class_names)
    objective = (objective or build_objective(config, model, len(data.class_names))).to(runtime.device)
    check_run(config, data, model, objective, runtime)
    freeze(model, config.optim)  # before DDP wraps the model: it only synchronises what requires gradients
    if resume and runtime.attention == "auto":
        runtime.attention = checkpointing.recorded_attention(run_dir) or "auto"
    runtime.choose_attention_for(model, config.run.batch_size // (config.run.grad_accum * runtime.dist.world_size))
    forward_model = torch.compile(model) if runtime.compile else model
    step_module = distributed.wrap(ObjectiveStep(forward_model, objective), runtime, objective.find_unused_parameters)
    if runtime.dist.enabled:
        seed_everything(rank_seed(config.run.seed, runtime.dist.rank))  # same weights everywhere, own augmentations
    optimizer = build_optimizer(model, objective, config.optim)
    if config.optim.ema_decay > 0 and runtime.distributed == "fsdp":
        raise UsageError("optim.ema_decay needs the whole model on every rank; it cannot be used with FSDP")
    ema = ModelEma(model, config.optim.ema_decay) if config.optim.ema_decay > 0 else None
    steps_per_epoch = num_batches(data.train, config.run.batch_size, drop_last=True)
    # run.steps: the fewest epochs that cover them; the loop stops at exactly that step (Trainer.total_steps).
    epochs = math.ceil(config.run.steps / steps_per_epoch) if config.run.steps else config.run.epochs
    trainer = Trainer(
        config, run_dir, runtime, data, model, objective, step_module, optimizer,
        make_scaler(runtime.precision, runtime.device), ema, RunState(planned_epochs=epochs),
        steps_per_epoch, warmup_steps(config.optim, steps_per_epoch),
    )  # fmt: skip
    num_classes, mean, std = len(data.class_names), config.data.mean, config.data.std
    for size in {trainer.resolution(0), config.data.img_size}:
        augment = TrainAugment(config.augment, size, mean, std, num_classes, seed=config.run.seed)
        trainer.augment[size] = augment.to(runtime.device)
    trainer.eval_transform = EvalTransform(config.data.img_size, mean, std).to(runtime.device)
    if resume:
        trainer.state = checkpointing.restore(trainer)
    return trainer


def run(trainer: Trainer, progress_bar: bool | None = None) -> dict[str, Any]:
    """Train the remaining epochs, validating and checkpointing after each, then write the summary."""
    state, run_cfg, main = trainer.state, trainer.config.run, trainer.runtime.dist.is_main
    clock = Clock(time.perf_counter(), state.elapsed_s)
    objective = trainer.objective
    columns = metric_columns(list(objective.train_metrics), list(objective.val_metrics))
    metrics = MetricsLog(trainer.run_dir, state.metrics_rows, state.step, columns) if main else None
    reporter = ProgressReporter(trainer.total_steps, state.step, run_cfg.log_every, progress_bar, enabled=main)
    announce(trainer, reporter)
    try:
        while state.epoch < state.planned_epochs:
            epoch_start, start_batch = time.perf_counter(), state.batch
            train_epoch(trainer, metrics, reporter, clock)
            finish_epoch(trainer, metrics, reporter, clock)
            if run_cfg.time_budget_min > 0 and state.epoch == 1:
                share = (trainer.steps_per_epoch - start_batch) / trainer.steps_per_epoch  # < 1 when resumed
                plan_for_budget(trainer, reporter, (time.perf_counter() - epoch_start) / max(share, 1e-6))
    finally:
        if metrics is not None:
            metrics.close()
        reporter.close()
    state.elapsed_s = clock.now()
    return write_summary(trainer, "finished")


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
    state, cfg, runtime = trainer.state, trainer.config, trainer.runtime
    trainer.step_module.train()
    frozen_to_eval(trainer.model)
    loader = make_loader(
        trainer.data.train, cfg.run.batch_size, shuffle=True, seed=cfg.run.seed, epoch=state.epoch,
        start_batch=state.batch, drop_last=True, device=runtime.device, num_workers=cfg.data.num_workers,
        rank=runtime.dist.rank, world_size=runtime.dist.world_size,
    )  # fmt: skip
    augment = trainer.augment[trainer.resolution(state.epoch)]
    batches = iter(loader)
    while state.step < trainer.total_steps:  # run.steps may end the last epoch early
        start = time.perf_counter()
        try:
            images, labels = next(batches)
        except StopIteration:
            break
        loaded = time.perf_counter()
        inputs, targets = augment(images, labels, state.step, runtime.dist.rank, runtime.dist.world_size)
        augmented = time.perf_counter()
        lr = learning_rate(state.step, cfg.optim, trainer.warmup, trainer.total_steps)
        set_learning_rate(trainer.optimizer, lr)
        values, grad_norm = train_step(trainer, Batch(inputs, targets, labels))
        end = time.perf_counter()
        batch = images.shape[0] * runtime.dist.world_size
        state.step, state.batch, state.images = state.step + 1, state.batch + 1, state.images + batch
        state.train_s += end - start
        state.data_wait_s += loaded - start
        state.augment_s += augmented - loaded
        sums = state.epoch_stats or {"seen": 0.0}
        sums = {k: sums.get(k, 0.0) + values.get(k, 1.0) * batch for k in ("seen", *values)}
        state.epoch_stats = sums
        row = {**values, "lr": lr, "grad_norm": grad_norm, "images_per_s": batch / (end - start),
               "data_wait_share": (loaded - start) / (end - start)}  # fmt: skip
        if metrics is not None:
            metrics.write("step", epoch=state.epoch + 1, step=state.step, time_s=clock.now(), **row)
        reporter.update(state.step, state.epoch + 1, state.planned_epochs, row)
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
    state, cfg = trainer.state, trainer.config
    last = trainer.checkpoint_dir / "last"
    kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint had been written yet"
    write_summary(trainer, "diverged", error=f"non-finite {what} at step {state.step + 1}")
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
    state, objective = trainer.state, trainer.objective
    results = {"raw": validate(trainer, trainer.model)}
    if trainer.ema is not None:
        results["ema"] = validate(trainer, trainer.ema.model)
    sums = state.epoch_stats or {"seen": 1.0}
    state.epoch, state.batch, state.epoch_stats = state.epoch + 1, 0, {}
    metric = objective.best_metric
    kind, best = max(results.items(), key=lambda item: item[1][metric] * (1 if objective.higher_is_better else -1))
    improved = objective.is_better(best[metric], state.best_value)
    if improved:
        state.best_value, state.best_scores, state.best_epoch, state.best_weights = (
            best[metric],
            best.values,
            state.epoch,
            kind,
        )
    state.last_eval = {
        f"{'' if name == 'raw' else 'ema_'}val_{key}": value
        for name, result in results.items()
        for key, value in result.values.items()
    }
    train_means = {k: v / max(1.0, sums["seen"]) for k, v in sums.items() if k != "seen"}
    if metrics is not None:
        metrics.write("epoch", epoch=state.epoch, step=state.step, time_s=clock.now(), **train_means, **state.last_eval)
        metrics.flush()
        state.metrics_rows = metrics.rows
    state.elapsed_s = clock.now()
    # best before last: a kill between the two repeats this epoch and rewrites the same best checkpoint.
    if improved:
        weights = trainer.model if kind == "raw" else trainer.ema.model
        checkpointing.save_weights(trainer, "best", weights, kind, best)
    if trainer.ema is not None:
        checkpointing.save_weights(trainer, "ema", trainer.ema.model, "ema", results["ema"])
    checkpointing.save_last(trainer)
    if metrics is not None:
        plot_curves(metrics.path, trainer.run_dir / "curves.png")
    shown = " ".join(f"{k} {v:.4g}" for k, v in train_means.items())
    scores = " ".join(f"{k} {v:.4g}" for k, v in results["raw"].values.items())
    ema_text = f" | EMA {metric} {results['ema'][metric]:.4g}" if "ema" in results else ""
    reporter.message(
        f"epoch {state.epoch}/{state.planned_epochs}: train {shown} | val {scores}{ema_text} | best {metric} "
        f"{state.best_value:.4g} (epoch {state.best_epoch}) | {format_duration(state.elapsed_s)} elapsed"
    )


def validate(trainer: Trainer, model: nn.Module) -> Validation:
    """The objective's validation metrics of `model` under the run's precision and attention kernel."""
    cfg, runtime = trainer.config, trainer.runtime
    sharded = runtime.distributed == "fsdp"
    if sharded:
        trainer.step_module.unshard()  # the root's parameters (embeddings, head); blocks gather themselves
    with runtime.attention_kernel():
        result = trainer.objective.validate(
            model, trainer.data.val, trainer.eval_transform,
            batch_size=cfg.run.eval_batch_size or cfg.run.batch_size, device=runtime.device,
            precision=runtime.precision,
        )  # fmt: skip
    if sharded:
        trainer.step_module.reshard()
    return result


def checkpoint(trainer: Trainer, metrics: MetricsLog | None, clock: Clock) -> None:
    """Mid-epoch checkpoint: flush the metrics, record how many rows belong to it, write checkpoints/last."""
    if metrics is not None:
        metrics.flush()
        trainer.state.metrics_rows = metrics.rows
    trainer.state.elapsed_s = clock.now()
    checkpointing.save_last(trainer)


def plan_for_budget(trainer: Trainer, reporter: ProgressReporter, epoch_s: float) -> None:
    """After epoch 1, cut the planned epochs so the run ends within `time_budget_min` (the schedule follows)."""
    state, cfg = trainer.state, trainer.config.run
    remaining = cfg.time_budget_min * 60 - state.elapsed_s
    fits = state.epoch + max(0, math.floor(remaining / max(epoch_s, 1e-6)))
    planned = distributed.broadcast_object(max(state.epoch, min(cfg.epochs, fits)), trainer.runtime)
    if planned != state.planned_epochs:
        state.planned_epochs = planned
        reporter.set_total(trainer.total_steps)
        checkpointing.save_last(trainer)
    reporter.message(
        f"time budget {cfg.time_budget_min:g} min: epoch 1 took {format_duration(epoch_s)}; "
        f"training {planned} of {cfg.epochs} epochs (the learning-rate schedule is fitted to them)"
    )
