"""Optimizer with decay / no-decay parameter groups, and the per-step learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from vitkit.training.config import OptimConfig

WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.")  # added by activation checkpointing / compile


def parameter_groups(model: nn.Module, weight_decay: float, extra: nn.Module | None = None) -> list[dict]:
    """Two groups: decayed weights, and what `no_weight_decay` names (biases, norms, E_pos, tokens).

    `extra` (an objective's own trainable parts) decays its matrices and nothing else.
    """
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        for prefix in WRAPPER_PREFIXES:
            name = name.replace(prefix, "")
        if param.requires_grad:
            (no_decay if name in skip or param.ndim <= 1 else decay).append(param)
    for param in extra.parameters() if extra is not None else []:
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, objective: nn.Module | None, config: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or SGD with momentum, over the model's and the objective's parameters."""
    groups = parameter_groups(model, config.weight_decay, objective)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
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
