"""Optimizer with decay / no-decay parameter groups, and the per-step learning-rate schedule."""

from __future__ import annotations

import math

import torch

from vitkit.models import VisionTransformer
from vitkit.training.config import OptimConfig


def parameter_groups(model: VisionTransformer, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and the biases, norms, position embeddings and tokens `no_weight_decay` names."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: VisionTransformer, config: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or SGD with momentum, over `parameter_groups`."""
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def warmup_steps(config: OptimConfig, steps_per_epoch: int) -> int:
    """Warm-up length in optimizer steps: `warmup_steps` when set, else `warmup_epochs` worth of steps."""
    if config.warmup_steps is not None:
        return config.warmup_steps
    return round(config.warmup_epochs * steps_per_epoch)


def learning_rate(step: int, config: OptimConfig, warmup: int, total_steps: int) -> float:
    """The rate of optimizer step `step` (0-based): linear warm-up to `lr`, then cosine or linear decay to `min_lr`."""
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    factor = 0.5 * (1.0 + math.cos(math.pi * progress)) if config.schedule == "cosine" else 1.0 - progress
    return config.min_lr + (config.lr - config.min_lr) * factor


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply `lr` to every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
