"""The training loop, top to bottom: data, model, optimizer, steps, evaluation, checkpoints, summary.

A run directory holds `config.yaml` (the resolved recipe), `metrics.csv`, `curves.png`, `summary.json` and
`checkpoints/{last,best}` (plus `checkpoints/ema` with EMA on). `checkpoints/last` carries the training
state (optimizer, scaler, EMA, every RNG, position in the epoch), so a run killed at any instant resumes
from its last checkpoint and, on CPU with the same thread count, ends with bit-identical weights.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vitkit.checkpoints import create_model, save
from vitkit.checkpoints.native import read_native, resolve_checkpoint_dir
from vitkit.data import DatasetSplits, EvalTransform, TrainAugment, load_dataset, make_loader, num_batches
from vitkit.models import VisionTransformer
from vitkit.training.config import ModelConfig, TrainConfig, load_config
from vitkit.training.device import (
    attention_kernel,
    autocast,
    check_precision,
    make_scaler,
    precision_warning,
    resolve_device,
    resolve_precision,
)
from vitkit.training.ema import ModelEma
from vitkit.training.evaluate import EvalResult, evaluate
from vitkit.training.metrics import MetricsLog, plot_curves
from vitkit.training.optim import build_optimizer, learning_rate, set_learning_rate, warmup_steps
from vitkit.training.progress import ProgressReporter, format_duration
from vitkit.training.state import (
    STATE_FILE,
    RunState,
    load_training_state,
    restore_rng,
    seed_everything,
    training_state,
)

log = logging.getLogger("vitkit.training")

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
# Flags that may differ when resuming: they change where and how fast the run goes, not what it computes.
RESUME_OVERRIDABLE = ("run.device", "run.log_every", "run.threads", "data.num_workers", "data.cache_dir")


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; the message says at which step and what to try."""


@dataclass
class Trainer:
    """The objects of one training session (built by `Trainer.create`)."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    precision: str  # resolved: "bf16", "fp16" or "fp32"
    data: DatasetSplits
    model: VisionTransformer
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    state: RunState
    steps_per_epoch: int
    warmup: int
    augment: TrainAugment = field(init=False)
    eval_transform: EvalTransform = field(init=False)

    def __post_init__(self) -> None:
        data, num_classes = self.config.data, len(self.data.class_names)
        self.augment = TrainAugment(self.config.augment, data.img_size, data.mean, data.std, num_classes).to(
            self.device
        )
        self.eval_transform = EvalTransform(data.img_size, data.mean, data.std).to(self.device)
        low = self.config.run.low_res_size
        self.low_res_augment = (
            TrainAugment(self.config.augment, low, data.mean, data.std, num_classes).to(self.device) if low else None
        )
        self.forward_model = torch.compile(self.model) if self.config.run.compile else self.model

    @property
    def total_steps(self) -> int:
        """Optimizer steps in the whole (planned) run."""
        return self.state.planned_epochs * self.steps_per_epoch

    @property
    def checkpoint_dir(self) -> Path:
        """RUN_DIR/checkpoints."""
        return self.run_dir / "checkpoints"


def train(
    config: TrainConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    overrides: dict[str, Any] | None = None,
    progress_bar: bool | None = None,
) -> dict[str, Any]:
    """Train `config` into `run_dir` (or continue the run there with `resume`) and return its summary.

    Raises TrainingDiverged when the loss becomes non-finite (the last good checkpoint is kept).
    """
    run_dir = Path(run_dir)
    if resume:
        trainer = create_trainer(resume_config(run_dir, overrides or {}), run_dir, resume=True)
    else:
        config = config or TrainConfig()
        preflight(config, run_dir, overwrite)
        trainer = create_trainer(config, run_dir, resume=False)  # loads the data: a bad path fails here
        prepare_run_dir(run_dir, overwrite)
        (run_dir / CONFIG_FILE).write_text(config.to_yaml())
    return run(trainer, progress_bar)


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The config of the run being resumed, with only the harmless overrides allowed."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run ({CONFIG_FILE} is missing); check the --resume path")
    refused = sorted(set(overrides) - set(RESUME_OVERRIDABLE))
    if refused:
        raise ValueError(
            f"--resume continues the run exactly as configured in {run_dir / CONFIG_FILE}; these options would change "
            f"it: {', '.join(refused)}. Drop them, or start a new run with --config {run_dir / CONFIG_FILE}"
        )
    return load_config(run_dir / CONFIG_FILE, overrides)


def preflight(config: TrainConfig, run_dir: Path, overwrite: bool) -> None:
    """Refuse an impossible device or precision, or an output directory in use, before any work."""
    device = resolve_device(config.run.device)
    check_precision(resolve_precision(config.run.precision, device), device)
    if run_dir.exists() and any(run_dir.iterdir()):
        is_run = (run_dir / CONFIG_FILE).exists() or (run_dir / "checkpoints").exists()
        if not overwrite or not is_run:
            hint = "pass --overwrite to replace it, " if is_run else ""
            raise ValueError(
                f"output directory {run_dir} already exists and is not empty; {hint}"
                f"use --resume {run_dir} to continue it, or choose another --out"
            )


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Create the run directory, replacing an earlier run there when `overwrite` (checked by `preflight`)."""
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def build_model(config: ModelConfig, num_classes: int, img_size: int) -> VisionTransformer:
    """A fresh ViT from the model section, or one initialised from `pretrained` (head and E_pos adapted)."""
    if config.pretrained:
        regularisation = {"dropout": config.dropout, "attn_dropout": config.attn_dropout, "drop_path": config.drop_path}
        return create_model(pretrained=config.pretrained, num_classes=num_classes, img_size=img_size, **regularisation)
    return create_model(config.name, num_classes=num_classes, img_size=img_size, **config.overrides())


def create_trainer(config: TrainConfig, run_dir: Path, resume: bool) -> Trainer:
    """Load the data, build model, optimizer, scaler and EMA, and restore them from checkpoints/last on resume."""
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    device = resolve_device(config.run.device)
    precision = resolve_precision(config.run.precision, device)
    check_precision(precision, device)
    seed_everything(config.run.seed)
    data = load_dataset(config.data)
    check_splits(data, config)
    model = build_model(config.model, len(data.class_names), config.data.img_size).to(device)
    model.class_names = list(data.class_names)
    check_low_res(config, model)
    optimizer = build_optimizer(model, config.optim)
    scaler = make_scaler(precision, device)
    ema = ModelEma(model, config.optim.ema_decay) if config.optim.ema_decay > 0 else None
    steps_per_epoch = num_batches(data.train, config.run.batch_size, drop_last=True)
    state = RunState(planned_epochs=config.run.epochs)
    if resume:
        state = restore(run_dir, model, optimizer, scaler, ema)
    return Trainer(
        config,
        run_dir,
        device,
        precision,
        data,
        model,
        optimizer,
        scaler,
        ema,
        state,
        steps_per_epoch,
        warmup_steps(config.optim, steps_per_epoch),
    )


def check_low_res(config: TrainConfig, model: VisionTransformer) -> None:
    """Progressive resizing needs a smaller size that the patches tile."""
    low, patch = config.run.low_res_size, model.config.patch_size[0]
    if low and (low >= config.data.img_size or low % patch):
        raise ValueError(
            f"run.low_res_size {low} must be smaller than data.img_size {config.data.img_size} and a multiple of "
            f"the patch size {patch}"
        )


def check_splits(data: DatasetSplits, config: TrainConfig) -> None:
    """Refuse data the loop cannot use, saying what to change."""
    if len(data.train) < config.run.batch_size:
        raise ValueError(
            f"the training split has {len(data.train)} images, fewer than one batch of {config.run.batch_size}; "
            f"use --batch-size {max(1, len(data.train) // 2)} or more data"
        )
    if len(data.val) == 0:
        raise ValueError("the validation split is empty; add a val/ folder or raise --val-fraction")


def restore(
    run_dir: Path,
    model: VisionTransformer,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ema: ModelEma | None,
) -> RunState:
    """Load weights and training state from RUN_DIR/checkpoints/last; every RNG is restored last."""
    last = resolve_checkpoint_dir(run_dir / "checkpoints" / "last")
    if not (last / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"{run_dir} has no resumable checkpoint ({last / STATE_FILE} is missing): the run stopped before its "
            "first checkpoint; start it again without --resume (add --overwrite)"
        )
    _, weights, _ = read_native(last)
    model.load_state_dict(weights)
    state = load_training_state(last / STATE_FILE)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    if ema is not None:
        if state["ema"] is None:
            raise ValueError(f"{last} was saved without EMA but the config enables it; the run cannot be resumed")
        ema.load_state_dict(state["ema"])
    restore_rng(state["rng"])
    progress = RunState(**state["progress"])
    log.info("resuming %s at epoch %d, batch %d (step %d)", run_dir, progress.epoch + 1, progress.batch, progress.step)
    return progress


def run(trainer: Trainer, progress_bar: bool | None = None) -> dict[str, Any]:
    """Train the remaining epochs, evaluating and checkpointing after each, then write the summary."""
    state, run_cfg = trainer.state, trainer.config.run
    session_start = time.perf_counter()
    elapsed_before = state.elapsed_s
    metrics = MetricsLog(trainer.run_dir, keep_rows=state.metrics_rows, resume_step=state.step)
    reporter = ProgressReporter(trainer.total_steps, state.step, run_cfg.log_every, progress_bar)
    announce(trainer, reporter)
    try:
        while state.epoch < state.planned_epochs:
            epoch_start, start_batch = time.perf_counter(), state.batch
            train_epoch(trainer, metrics, reporter, session_start, elapsed_before)
            finish_epoch(trainer, metrics, reporter, session_start, elapsed_before)
            if run_cfg.time_budget_min > 0 and state.epoch == 1:
                share = (trainer.steps_per_epoch - start_batch) / trainer.steps_per_epoch  # < 1 when resumed
                plan_for_budget(trainer, reporter, (time.perf_counter() - epoch_start) / max(share, 1e-6))
    finally:
        metrics.close()
        reporter.close()
    state.elapsed_s = elapsed_before + time.perf_counter() - session_start
    return write_summary(trainer, "finished")


def announce(trainer: Trainer, reporter: ProgressReporter) -> None:
    """One line saying what is being trained on what (and a warning for a precision that is slow here)."""
    data, cfg = trainer.data, trainer.config
    warning = precision_warning(trainer.precision, trainer.device)
    if warning:
        reporter.message(f"warning: {warning}")
    params = sum(p.numel() for p in trainer.model.parameters())
    threads = torch.get_num_threads()
    reporter.message(
        f"training ViT {cfg.model.name} ({params / 1e6:.2f}M params) on {cfg.data.path}: {len(data.train)} train / "
        f"{len(data.val)} val images, {len(data.class_names)} classes, {cfg.data.img_size}px; "
        f"{trainer.state.planned_epochs} epochs x {trainer.steps_per_epoch} steps of {cfg.run.batch_size} on "
        f"{trainer.device} ({trainer.precision}, {threads} thread{'s' * (threads > 1)}); run dir {trainer.run_dir}"
    )


def train_epoch(
    trainer: Trainer, metrics: MetricsLog, reporter: ProgressReporter, session_start: float, elapsed_before: float
) -> None:
    """The remaining batches of the current epoch, checkpointing every `save_every` steps."""
    state, cfg = trainer.state, trainer.config
    trainer.model.train()
    loader = make_loader(
        trainer.data.train,
        cfg.run.batch_size,
        shuffle=True,
        seed=cfg.run.seed,
        epoch=state.epoch,
        start_batch=state.batch,
        drop_last=True,
        device=trainer.device,
        num_workers=cfg.data.num_workers,
    )
    batches = iter(loader)
    low_res = trainer.low_res_augment is not None and state.epoch < cfg.run.low_res_epochs
    augment = trainer.low_res_augment if low_res else trainer.augment
    stats = state.epoch_stats or {"loss_sum": 0.0, "correct": 0.0, "seen": 0.0}
    while True:
        start = time.perf_counter()
        try:
            images, labels = next(batches)
        except StopIteration:
            break
        loaded = time.perf_counter()
        inputs, targets = augment(images, labels)
        augmented = time.perf_counter()
        lr = learning_rate(state.step, cfg.optim, trainer.warmup, trainer.total_steps)
        set_learning_rate(trainer.optimizer, lr)
        loss, correct, grad_norm = train_step(trainer, inputs, targets)
        end = time.perf_counter()
        batch = images.shape[0]
        state.step, state.batch, state.images = state.step + 1, state.batch + 1, state.images + batch
        state.train_s += end - start
        state.data_wait_s += loaded - start
        state.augment_s += augmented - loaded
        stats = {
            "loss_sum": stats["loss_sum"] + loss * batch,
            "correct": stats["correct"] + correct,
            "seen": stats["seen"] + batch,
        }
        state.epoch_stats = stats
        values = {
            "lr": lr,
            "loss": loss,
            "acc": 100 * correct / batch,
            "grad_norm": grad_norm,
            "images_per_s": batch / (end - start),
            "data_wait_share": (loaded - start) / (end - start),
        }
        metrics.write(
            "step", epoch=state.epoch + 1, step=state.step, time_s=elapsed_before + end - session_start, **values
        )
        reporter.update(state.step, state.epoch + 1, state.planned_epochs, values)
        if cfg.run.save_every and state.step % cfg.run.save_every == 0 and state.batch < trainer.steps_per_epoch:
            checkpoint(trainer, metrics, elapsed_before + time.perf_counter() - session_start)


def train_step(trainer: Trainer, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float, float]:
    """Forward and backward over `grad_accum` micro-batches, clip, step; returns loss, correct count, grad norm."""
    cfg, model, optimizer, scaler = trainer.config, trainer.forward_model, trainer.optimizer, trainer.scaler
    total = inputs.shape[0]
    loss_sum = torch.zeros((), device=inputs.device)
    correct = torch.zeros((), device=inputs.device)
    for x, t in zip(inputs.chunk(cfg.run.grad_accum), targets.chunk(cfg.run.grad_accum), strict=True):
        with autocast(trainer.precision, trainer.device), attention_kernel(cfg.run.attention):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), t)  # soft targets: label smoothing and mixing are already in `t`
        scaler.scale(loss * (x.shape[0] / total)).backward()
        loss_sum += loss.detach() * x.shape[0]
        correct += (logits.argmax(1) == t.argmax(1)).sum()
    loss_value = loss_sum.item() / total
    parameters = [p for p in trainer.model.parameters() if p.grad is not None]
    scaler.unscale_(optimizer)
    if cfg.optim.clip_grad > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, cfg.optim.clip_grad)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    norm_value = grad_norm.item()
    # fp16 overflows are the GradScaler's to handle (it skips the step and lowers the scale); anything else stops.
    if not math.isfinite(loss_value) or (not math.isfinite(norm_value) and not scaler.is_enabled()):
        optimizer.zero_grad(set_to_none=True)
        raise diverged(trainer, "loss" if not math.isfinite(loss_value) else "gradient norm", loss_value, norm_value)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if trainer.ema is not None:
        trainer.ema.update(trainer.model)
    return loss_value, correct.item(), norm_value


def diverged(trainer: Trainer, what: str, loss: float, norm: float) -> TrainingDiverged:
    """The error for a non-finite loss or gradient, naming the step and the checkpoint that is kept."""
    state, cfg = trainer.state, trainer.config
    last = trainer.checkpoint_dir / "last"
    kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint had been written yet"
    write_summary(trainer, "diverged", error=f"non-finite {what} at step {state.step + 1}")
    hints = [f"a lower --lr (now {cfg.optim.lr:g})"]
    if trainer.precision != "fp32":
        hints.append("--precision fp32")
    if cfg.optim.clip_grad == 0:
        hints.append("--clip-grad 1.0")
    else:
        hints.append(f"a smaller --clip-grad (now {cfg.optim.clip_grad:g})")
    if cfg.optim.warmup_steps is None and cfg.optim.warmup_epochs < 5:
        hints.append("a longer --warmup-epochs")
    return TrainingDiverged(
        f"training stopped: the {what} became non-finite at step {state.step + 1} (epoch {state.epoch + 1}; "
        f"loss {loss:g}, gradient norm {norm:g}); {kept}. Try {', '.join(hints)}"
    )


def finish_epoch(
    trainer: Trainer, metrics: MetricsLog, reporter: ProgressReporter, session_start: float, elapsed_before: float
) -> None:
    """Evaluate raw (and EMA) weights, keep the best, checkpoint, log the epoch and redraw the curves."""
    state, cfg = trainer.state, trainer.config
    eval_batch = cfg.run.eval_batch_size or cfg.run.batch_size
    results = {"raw": run_eval(trainer, trainer.model, eval_batch)}
    if trainer.ema is not None:
        results["ema"] = run_eval(trainer, trainer.ema.model, eval_batch)
    stats = state.epoch_stats
    state.epoch, state.batch, state.epoch_stats = state.epoch + 1, 0, {}
    # best: whichever weights (raw or EMA) score the highest validation top-1; ties keep the earlier epoch.
    kind, best = max(results.items(), key=lambda item: item[1].top1)
    improved = best.top1 > state.best_top1
    if improved:
        state.best_top1, state.best_top5, state.best_epoch, state.best_weights = best.top1, best.top5, state.epoch, kind
    raw = results["raw"]
    state.last_eval = {"val_top1": raw.top1, "val_top5": raw.top5, "val_loss": raw.loss}
    row = {
        "epoch": state.epoch,
        "step": state.step,
        "time_s": elapsed_before + time.perf_counter() - session_start,
        "loss": stats["loss_sum"] / max(1, stats["seen"]),
        "acc": 100 * stats["correct"] / max(1, stats["seen"]),
        "val_loss": raw.loss,
        "val_top1": raw.top1,
        "val_top5": raw.top5,
    }
    if "ema" in results:
        state.last_eval.update({"ema_val_top1": results["ema"].top1, "ema_val_top5": results["ema"].top5})
        row.update(ema_val_loss=results["ema"].loss, ema_val_top1=results["ema"].top1, ema_val_top5=results["ema"].top5)
    metrics.write("epoch", **row)
    metrics.flush()
    state.metrics_rows = metrics.rows
    state.elapsed_s = elapsed_before + time.perf_counter() - session_start
    # best before last: a kill between the two repeats this epoch and rewrites the same best checkpoint.
    if improved:
        weights = trainer.model if kind == "raw" else trainer.ema.model
        save(
            weights,
            trainer.checkpoint_dir / "best",
            class_names=trainer.data.class_names,
            metadata=checkpoint_metadata(trainer, kind, best),
        )
    if trainer.ema is not None:
        save(
            trainer.ema.model,
            trainer.checkpoint_dir / "ema",
            class_names=trainer.data.class_names,
            metadata=checkpoint_metadata(trainer, "ema", results["ema"]),
        )
    save_last(trainer)
    plot_curves(metrics.path, trainer.run_dir / "curves.png")
    ema_text = f", EMA {results['ema'].top1:.2f}%" if "ema" in results else ""
    reporter.message(
        f"epoch {state.epoch}/{state.planned_epochs}: train loss {row['loss']:.4f} acc {row['acc']:.1f}% | "
        f"val loss {raw.loss:.4f} top-1 {raw.top1:.2f}% top-5 {raw.top5:.2f}%{ema_text} | "
        f"best {state.best_top1:.2f}% (epoch {state.best_epoch}) | {format_duration(state.elapsed_s)} elapsed"
    )


def run_eval(trainer: Trainer, model: torch.nn.Module, batch_size: int) -> EvalResult:
    """Validation metrics of `model` under the run's precision and attention kernel."""
    with attention_kernel(trainer.config.run.attention):
        return evaluate(
            model,
            trainer.data.val,
            trainer.eval_transform,
            batch_size=batch_size,
            device=trainer.device,
            precision=trainer.precision,
        )


def checkpoint_metadata(trainer: Trainer, weights: str, result: EvalResult | None = None) -> dict[str, Any]:
    """What a checkpoint records besides the weights: position, scores, and the data settings eval/predict need."""
    data = trainer.config.data
    meta = {
        "epoch": trainer.state.epoch,
        "step": trainer.state.step,
        "weights": weights,
        "precision": trainer.precision,
        "data": {
            "path": data.path,
            "absolute_path": str(Path(data.path).resolve()) if data.path != "digits" else data.path,
            "img_size": data.img_size,
            "mean": list(data.mean),
            "std": list(data.std),
            "val_fraction": data.val_fraction,
            "seed": data.seed,
        },
        "training": trainer.config.to_dict(),
    }
    if result is not None:
        meta.update(val_top1=result.top1, val_top5=result.top5)
    return meta


def checkpoint(trainer: Trainer, metrics: MetricsLog, elapsed_s: float) -> None:
    """Mid-epoch checkpoint: flush the metrics, record how many rows belong to it, write checkpoints/last."""
    metrics.flush()
    trainer.state.metrics_rows = metrics.rows
    trainer.state.elapsed_s = elapsed_s
    save_last(trainer)


def save_last(trainer: Trainer) -> None:
    """Write checkpoints/last atomically: the weights and everything needed to resume from this exact point."""
    state = training_state(trainer.state, trainer.optimizer, trainer.scaler, trainer.ema, trainer.config.to_dict())
    save(
        trainer.model,
        trainer.checkpoint_dir / "last",
        class_names=trainer.data.class_names,
        metadata=checkpoint_metadata(trainer, "raw"),
        extra_files={STATE_FILE: state},
    )


def plan_for_budget(trainer: Trainer, reporter: ProgressReporter, epoch_s: float) -> None:
    """After epoch 1, cut the planned epochs so the run ends within `time_budget_min` (the schedule follows)."""
    state, cfg = trainer.state, trainer.config.run
    remaining = cfg.time_budget_min * 60 - state.elapsed_s
    fits = state.epoch + max(0, math.floor(remaining / max(epoch_s, 1e-6)))
    planned = max(state.epoch, min(cfg.epochs, fits))
    if planned != state.planned_epochs:
        state.planned_epochs = planned
        reporter.set_total(trainer.total_steps)
        save_last(trainer)
    reporter.message(
        f"time budget {cfg.time_budget_min:g} min: epoch 1 took {format_duration(epoch_s)}; "
        f"training {planned} of {cfg.epochs} epochs (the learning-rate schedule is fitted to them)"
    )


def write_summary(trainer: Trainer, status: str, error: str | None = None) -> dict[str, Any]:
    """RUN_DIR/summary.json: best and last scores, time, throughput, data-wait share, skipped files."""
    state, cfg = trainer.state, trainer.config
    summary = {
        "status": status,
        "val_top1": state.best_top1 if state.best_top1 >= 0 else None,
        "val_top5": state.best_top5 if state.best_top1 >= 0 else None,
        "best_epoch": state.best_epoch,
        "best_weights": state.best_weights,
        "final_val_top1": state.last_eval.get("val_top1"),
        "final_val_top5": state.last_eval.get("val_top5"),
        "final_ema_val_top1": state.last_eval.get("ema_val_top1"),
        "epochs": state.epoch,
        "planned_epochs": state.planned_epochs,
        "steps": state.step,
        "wall_s": round(state.elapsed_s, 2),
        "train_s": round(state.train_s, 2),
        "train_images_per_s": round(state.images / state.train_s, 1) if state.train_s else None,
        "data_wait_share": round(state.data_wait_s / state.train_s, 4) if state.train_s else None,
        "augment_share": round(state.augment_s / state.train_s, 4) if state.train_s else None,
        "train_images": len(trainer.data.train),
        "val_images": len(trainer.data.val),
        "num_classes": len(trainer.data.class_names),
        "skipped_files": [{"path": s.path, "reason": s.reason} for s in trainer.data.skipped],
        "model": trainer.model.config.name or cfg.model.name,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "device": str(trainer.device),
        "precision": trainer.precision,
        "threads": torch.get_num_threads(),
        "best_checkpoint": str(trainer.checkpoint_dir / "best"),
        "last_checkpoint": str(trainer.checkpoint_dir / "last"),
    }
    if error:
        summary["error"] = error
    (trainer.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
