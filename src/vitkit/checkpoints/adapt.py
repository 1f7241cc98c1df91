"""Fit a state dict (in vitkit names) into a model: resample position embeddings, re-initialise the head."""

from __future__ import annotations

import logging

import torch

from vitkit.errors import UsageError
from vitkit.models import ArchConfig, Model, ViTConfig
from vitkit.models.posemb import resample_axis, resample_posemb

log = logging.getLogger(__name__)

HEAD_KEYS = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")  # DeiT's second head
PRE_LOGITS_KEYS = ("pre_logits.weight", "pre_logits.bias")  # the pre-training head's Dense + tanh (Sec. 3.1)


def adapt_state_dict(
    state_dict: dict[str, torch.Tensor],
    source: ArchConfig,
    model: Model,
    origin: str = "checkpoint",
    new_head: bool = False,
) -> dict[str, torch.Tensor]:
    """Return `state_dict` made to fit `model`: new resolution -> resampled E_pos (ViTs); new classes -> fresh head.

    `new_head` gives a fresh (zero) head even when the checkpoint's fits, as fine-tuning does (Sec. 3.2); a
    model without a pre-logits layer drops the checkpoint's. The changes are reported in one log line; any
    other difference is left for `load_into` to report.
    """
    target = model.config
    state = dict(state_dict)
    changes = []
    # ConvNets pool globally: a new resolution changes no weight.
    if isinstance(source, ViTConfig) and isinstance(target, ViTConfig) and source.grid_size != target.grid_size:
        if "pos_embed.weight" in state:
            state["pos_embed.weight"] = resample_posemb(
                state["pos_embed.weight"], target.grid_size, source.grid_size, source.num_prefix_tokens
            )
        if "pos_embed.row" in state:
            state["pos_embed.row"] = resample_axis(state["pos_embed.row"], target.grid_size[0])
            state["pos_embed.col"] = resample_axis(state["pos_embed.col"], target.grid_size[1])
        changes.append(
            f"position embeddings resampled from a {source.grid_size[0]}x{source.grid_size[1]} grid "
            f"({source.img_size[0]}x{source.img_size[1]} px) to {target.grid_size[0]}x{target.grid_size[1]} "
            f"({target.img_size[0]}x{target.img_size[1]} px)"
        )
    expected = model.state_dict()
    if any(key in state for key in PRE_LOGITS_KEYS) and not any(key in expected for key in PRE_LOGITS_KEYS):
        for key in PRE_LOGITS_KEYS:
            state.pop(key, None)
        changes.append("pre-logits layer removed")
    if new_head or _shape(state, "head.weight") != _shape(expected, "head.weight"):
        # A new task's head(s) start at zero, as in the paper's fine-tuning (Sec. 3.2); a headless model
        # (num_classes=0) drops the checkpoint's head, and a headless checkpoint gets a fresh one.
        for key in HEAD_KEYS:
            state.pop(key, None)
            if key in expected:
                state[key] = torch.zeros_like(expected[key])
        if target.num_classes:
            changes.append(f"head re-initialised (zeros) for {target.num_classes} classes (was {source.num_classes})")
        else:
            changes.append(f"head dropped (num_classes=0; was {source.num_classes})")
    if changes:
        log.info("loaded %s: %s", origin, "; ".join(changes))
    return state


def _shape(state: dict[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    """The shape of `state[key]`, or None when the key is absent."""
    return tuple(state[key].shape) if key in state else None


def load_into(model: Model, state_dict: dict[str, torch.Tensor], origin: str = "checkpoint") -> None:
    """Strictly load `state_dict`, or raise one error naming missing keys, unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches: {'; '.join(mismatched)}")
        raise UsageError(
            f"{origin} does not fit the model {model.config.name or ''} ({'; '.join(problems)}). "
            "Check the model name and its overrides (hidden size, depth, patch size, pooling, position embedding)."
        )
    model.load_state_dict({key: value.to(expected[key].dtype) for key, value in state_dict.items()})
