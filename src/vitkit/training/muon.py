"""Muon for the transformer's weight matrices, AdamW for everything else, behind one optimizer object.

Muon (Jordan et al. 2024, `torch.optim.Muon`) orthogonalises each 2D weight's momentum with a Newton-Schulz
iteration before the update. It is meant for the hidden matrices only: the blocks' qkv, attention output and
MLP weights. Embeddings (the patch projection, tokens, E_pos), the head, norms and biases stay with AdamW, as
in the speedruns that report it (the CIFAR-10 ConvNet speedrun 3.3 -> 2.6 s, nanoGPT 1.35x fewer steps).
With `optim.muon_convs` it also owns the convolution kernels of a hybrid's or tokenizer's stem that do not read
the image, each as the (out, in kh kw) matrix it applies to every patch, as the ConvNet speedrun's Muon does.

The matrices use torch's `adjust_lr_fn="match_rms_adamw"` (Liu et al. 2025, "Muon is scalable"): each update
is scaled to AdamW's typical RMS (0.2 sqrt(max(A, B))), so the recipe's AdamW learning rate and weight decay
transfer to both halves unchanged and one schedule drives them.

`Muon` is torch.optim.Muon's update (Nesterov momentum, the quintic Newton-Schulz iteration with its
coefficients, decoupled weight decay, the same state layout) with one difference: the dtype of the iteration is
a choice. torch's always casts to bf16, which on a CPU without bf16 units is emulated: there the iteration took
47% of a CIFAR training step (AMD EPYC Zen 3, 1 thread, bf16 matmuls ~100x slower than fp32). The trainer runs
it in bf16 where the run computes in bf16 and in fp32 elsewhere. It needs no torch >= 2.9 either.

`MuonAdamW` holds the two optimizers and exposes their parameter groups as its own (the same dicts), so
the learning-rate schedule, layer-wise `lr_scale`, `zero_grad`, gradient clipping and the GradScaler see one
optimizer; its state dict holds both halves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from vitkit.errors import UsageError

MUON_MOMENTUM = 0.95  # Muon's momentum (Nesterov), as torch's default and the reference
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic's (a, b, c): steepest slope at zero (Jordan et al.)
NS_STEPS = 5
NS_EPS = 1e-7


def orthogonalise(update: torch.Tensor, dtype: torch.dtype = torch.bfloat16, steps: int = NS_STEPS) -> torch.Tensor:
    """U S' V^T with S' ~ 1 for the 2D `update` = U S V^T: the quintic Newton-Schulz iteration, computed in `dtype`."""
    a, b, c = NS_COEFFICIENTS
    x = update.to(dtype)
    wide = x.size(0) > x.size(1)
    if wide:
        x = x.T  # iterate on the smaller Gram matrix
    x = x / x.norm().clamp(min=NS_EPS)  # spectral norm <= Frobenius norm = 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if wide else x


def adjusted_lr(lr: float, shape: torch.Size) -> float:
    """The learning rate of a (A, B) matrix under "match_rms_adamw": lr 0.2 sqrt(max(A, B)) (Liu et al. 2025)."""
    return lr * 0.2 * math.sqrt(max(shape[0], shape[1]))


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's update with `adjust_lr_fn="match_rms_adamw"`, its Newton-Schulz iteration in `ns_dtype`."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = MUON_MOMENTUM,
        nesterov: bool = True,
        ns_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov}
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every matrix with a gradient."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.ndim not in (2, 4):
                    raise UsageError(
                        f"Muon updates matrices and convolution kernels only, got a parameter of shape "
                        f"{tuple(param.shape)}"
                    )
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param.grad, memory_format=torch.preserve_format)
                buffer = state["momentum_buffer"]
                buffer.lerp_(param.grad, 1 - momentum)
                update = param.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                # A kernel (out, in, kh, kw) is the matrix out x (in kh kw) it applies to each patch.
                matrix = update.reshape(update.size(0), -1)
                update = orthogonalise(matrix, self.ns_dtype).reshape_as(param)
                param.mul_(1 - lr * decay)
                param.add_(update, alpha=-adjusted_lr(lr, matrix.shape))
        return loss


def is_hidden_matrix(name: str, param: torch.Tensor) -> bool:
    """Whether Muon should own `param`: a 2D weight inside an encoder block (not embeddings, head, norms, biases)."""
    return param.ndim == 2 and name.startswith("blocks.") and name.endswith(".weight")


def is_hidden_kernel(param: torch.Tensor, image_channels: int) -> bool:
    """Whether `param` is a convolution kernel that does not read the image: the convolutions of a hybrid's or
    tokenizer's stem past its first, which Muon may own as (out, in kh kw) matrices, as the CIFAR-10 speedrun's
    Muon does (Jordan 2024). Kernels reading the image (the first convolution, a plain ViT's patch projection) stay with
    AdamW, like the speedrun's first layer and Muon's rule for input embeddings."""
    return param.ndim == 4 and param.size(1) != image_channels


class MuonAdamW(torch.optim.Optimizer):
    """Muon over the hidden matrices and AdamW over the rest, stepped together."""

    def __init__(
        self,
        groups: list[dict[str, Any]],
        hidden: Iterable[torch.Tensor],
        lr: float,
        betas=(0.9, 0.999),
        ns_dtype: torch.dtype = torch.bfloat16,
        fused: bool | None = None,
    ):
        hidden_ids = {id(p) for p in hidden}
        muon_groups, adam_groups = [], []
        for group in groups:
            settings = {k: v for k, v in group.items() if k != "params"}
            matrices = [p for p in group["params"] if id(p) in hidden_ids]
            rest = [p for p in group["params"] if id(p) not in hidden_ids]
            if matrices:
                muon_groups.append({**settings, "params": matrices})
            if rest:
                adam_groups.append({**settings, "params": rest})
        if not muon_groups:
            raise UsageError(
                "optim.optimizer muon needs 2D weights inside encoder blocks (a ViT) or, with optim.muon_convs, "
                "convolution kernels; this model has none: use adamw"
            )
        self.muon = Muon(muon_groups, lr=lr, momentum=MUON_MOMENTUM, nesterov=True, ns_dtype=ns_dtype)
        self.adamw = torch.optim.AdamW(adam_groups or [{"params": []}], lr=lr, betas=betas, fused=fused)
        super().__init__([p for g in groups for p in g["params"]], {"lr": lr})
        # One list of the inner optimizers' own group dicts: a change of "lr" here is a change there.
        self.param_groups = self.muon.param_groups + self.adamw.param_groups

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step of both halves."""
        loss = closure() if closure is not None else None
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """Both halves' states."""
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore both halves (from `state_dict`)."""
        if set(state_dict) != {"muon", "adamw"}:
            raise UsageError("the saved optimizer state is not a Muon + AdamW state; resume with the run's optimizer")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups


def hidden_matrices(
    model: nn.Module, clean_name=lambda name: name, convs: bool = False, image_channels: int = 3
) -> list[torch.Tensor]:
    """The trainable parameters of `model` that Muon owns (`clean_name` strips compile/DDP prefixes): the blocks'
    matrices, and with `convs` the convolution kernels that do not read the `image_channels`-channel input."""
    return [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and (is_hidden_matrix(clean_name(n), p) or (convs and is_hidden_kernel(p, image_channels)))
    ]
