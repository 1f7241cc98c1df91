"""Exponential moving average of the weights (Polyak averaging), evaluated and checkpointed beside the model.

The average is torch's `AveragedModel` (`torch.optim.swa_utils`) over parameters and buffers, updated with one
`torch._foreach_lerp_` per dtype group as `get_ema_multi_avg_fn` does, but with the warm-up decay below
(`get_ema_multi_avg_fn` holds one fixed decay) and with integer buffers copied, not averaged (BatchNorm's
`num_batches_tracked` in the ConvNets). Measured per update on a 2.39M-parameter ViT (mu/4 body at hidden 256,
depth 3, MLP 1024; 44 tensors), `torch.set_num_threads(1)`, 2-core Sapphire Rapids Xeon, median of 7 x 50
updates, two alternating rounds: `AveragedModel` 1.15 / 1.12 ms, the earlier hand-written loop over
`state_dict()` with one `lerp_` per tensor 1.18 / 1.14 ms. The same cost, and the averages are bit-identical
after 30 updates, so the library's version is used.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class ModelEma:
    """A frozen copy of the model whose tensors follow ema = d * ema + (1 - d) * weights after each step.

    The decay ramps up as min(decay, (1 + t) / (10 + t)) over the first updates t, so the average is useful
    in short runs instead of being dominated by the random initialisation. The copy made here counts as
    `AveragedModel`'s first average, so update t = 0 already averages (0.1 * copy + 0.9 * weights) instead of
    copying.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.average = AveragedModel(model, multi_avg_fn=self._lerp, use_buffers=True)
        self.average.n_averaged.fill_(1)
        self.average.module.eval().requires_grad_(False)

    @property
    def model(self) -> nn.Module:
        """The averaged model itself (a plain copy of the trained model's class): evaluated and saved as `ema`."""
        return self.average.module

    @property
    def updates(self) -> int:
        """How many updates have been applied."""
        return int(self.average.n_averaged) - 1

    def current_decay(self) -> float:
        """The decay used by the next update (with warm-up)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights."""
        self._weight = 1.0 - self.current_decay()
        self.average.update_parameters(model)

    def _lerp(self, averages: list[torch.Tensor], currents: list[torch.Tensor], _: torch.Tensor) -> None:
        """AveragedModel's multi_avg_fn for one (device, dtype) group: lerp floats by this update's weight."""
        if averages[0].is_floating_point():
            torch._foreach_lerp_(averages, currents, self._weight)
        else:
            torch._foreach_copy_(averages, currents)

    def state_dict(self) -> dict:
        """Weights and update count, for resuming (the layout training states have always had)."""
        return {"updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.average.n_averaged.fill_(int(state["updates"]) + 1)
        self.model.load_state_dict(state["weights"])
