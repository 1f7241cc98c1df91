"""Exponential moving average of the weights (Polyak averaging), evaluated and checkpointed beside the model."""

from __future__ import annotations

import copy

import torch

from vitkit.models import VisionTransformer


class ModelEma:
    """A frozen copy of the model whose float tensors follow ema = d * ema + (1 - d) * weights after each step.

    The decay ramps up as min(decay, (1 + t) / (10 + t)) over the first updates t, so the average is useful
    in short runs instead of being dominated by the random initialisation.
    """

    def __init__(self, model: VisionTransformer, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay used by the next update (with warm-up)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: VisionTransformer) -> None:
        """Move the average towards `model`'s current weights."""
        weight = 1.0 - self.current_decay()
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if average.is_floating_point():
                average.lerp_(current.detach(), weight)
            else:
                average.copy_(current)
        self.updates += 1

    def state_dict(self) -> dict:
        """Weights and update count, for resuming."""
        return {"updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["weights"])
