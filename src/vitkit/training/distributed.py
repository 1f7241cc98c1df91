"""Many processes through torchrun: DDP or FSDP2 wrapping, gathered state dicts, reduced metrics.

Launch with torchrun, never a home-made launcher:

    torchrun --nproc_per_node=2 -m vitkit train --config recipes/cifar10.yaml --out runs/ddp
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m vitkit train ...

`run.batch_size` is the global batch: each rank takes its contiguous share of every batch of the one seeded
epoch order, so a run's data, schedule and checkpoints do not depend on the number of processes, and a run
can resume on a different world size with the same global batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vitkit.errors import UsageError
from vitkit.models import Model
from vitkit.training.runtime import Runtime


def wrap(step: nn.Module, runtime: Runtime, find_unused_parameters: bool = False) -> nn.Module:
    """The training-step module as the runtime asks: itself, DDP, or FSDP2 (each ViT block its own shard)."""
    if runtime.activation_checkpointing:
        apply_activation_checkpointing(step)
    if runtime.distributed == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        return DistributedDataParallel(step, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
    if runtime.distributed == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in _unwrap_model(step).block_list() or []:
            fully_shard(block)
        fully_shard(step)  # the root: embeddings, final norm, head and the objective's own parameters
    return step


def _unwrap_model(step: nn.Module) -> Model:
    """The model inside an ObjectiveStep (or the model itself), through torch.compile's wrapper."""
    model = getattr(step, "model", step)  # wrappers, not model families: ObjectiveStep.model, compile's _orig_mod
    return getattr(model, "_orig_mod", model)


def apply_activation_checkpointing(step: nn.Module) -> None:
    """Recompute each transformer block's activations in the backward pass instead of storing them."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    model = _unwrap_model(step)
    blocks = model.block_list()
    if blocks is None:
        raise UsageError(f"activation checkpointing needs a model with transformer blocks, not {type(model).__name__}")
    for index, block in enumerate(blocks):
        blocks[index] = checkpoint_wrapper(block)


def full_state_dict(model: nn.Module, runtime: Runtime) -> dict[str, torch.Tensor]:
    """The model's complete state dict on the CPU (gathered from every rank under FSDP; call on all ranks)."""
    if runtime.distributed == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return clean_keys(get_model_state_dict(model, options=options))
    return clean_keys({k: v.detach().cpu() for k, v in model.state_dict().items()})


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, runtime: Runtime) -> dict[str, Any]:
    """The optimizer state, gathered to full tensors under FSDP (so any world size can resume it)."""
    if runtime.distributed == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, optimizer, options=options)
    return optimizer.state_dict()


def load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    runtime: Runtime,
) -> None:
    """Load a full (unsharded) model and optimizer state into this rank's model, sharding it under FSDP."""
    if runtime.distributed == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
        set_model_state_dict(model, weights, options=options)
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
        return
    model.load_state_dict(weights)
    optimizer.load_state_dict(optimizer_state)


WRAPPER_PREFIXES = ("_orig_mod.", "_checkpoint_wrapped_module.")  # added by torch.compile / activation checkpointing


def clean_name(name: str) -> str:
    """A parameter name without the prefixes that torch.compile and activation checkpointing add."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def clean_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with `clean_name` keys."""
    return {clean_name(key): value for key, value in state.items()}


def reduce_mean(values: dict[str, torch.Tensor], runtime: Runtime) -> dict[str, torch.Tensor]:
    """Average scalar metrics over all ranks (one all-reduce for all of them); unchanged for one process."""
    if not runtime.dist.enabled or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(runtime.device)
    dist.all_reduce(stacked)
    stacked /= runtime.dist.world_size
    return dict(zip(keys, stacked.unbind(), strict=True))


def broadcast_object(value: Any, runtime: Runtime) -> Any:
    """`value` of rank 0 on every rank (a decision such as the planned epochs must be the same everywhere)."""
    if not runtime.dist.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
