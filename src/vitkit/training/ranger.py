"""Ranger: RAdam with Lookahead, the optimizer of fastai's Imagenette leaderboard (Wright 2019).

RAdam (Liu et al. 2019, `torch.optim.RAdam`) rectifies Adam's update while its second-moment estimate is still
built from few steps, which stands in for a warm-up. Lookahead (Zhang et al. 2019) keeps a slow copy of the
weights: every `k` steps the slow weights move `alpha` of the way to the fast ones and the fast weights restart
from there, damping the noise of a high learning rate. The leaderboard pairs it with a flat-then-cosine schedule
(`optim.schedule: flat_cos`) at lr 1e-2 and decoupled weight decay 1e-2.

The slow copy lives in the optimizer's per-parameter state, so `state_dict` holds it and a resumed run continues
exactly; its clock is RAdam's own step count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

LOOKAHEAD_STEPS = 6  # k: Ranger's default (fastai's `ranger`, k=6, alpha=0.5)
LOOKAHEAD_ALPHA = 0.5


class Ranger(torch.optim.RAdam):
    """RAdam with decoupled weight decay, wrapped in Lookahead (every `k` steps: slow += alpha (fast - slow))."""

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-6,
        k: int = LOOKAHEAD_STEPS,
        alpha: float = LOOKAHEAD_ALPHA,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, decoupled_weight_decay=True)
        self.k, self.alpha = k, alpha

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One RAdam step; on every k-th, the Lookahead sync of the slow and fast weights."""
        # The slow weights start as the weights before the first fast step (set after it: RAdam reads a non-empty
        # state as initialised).
        first = {
            param: param.detach().clone()
            for group in self.param_groups
            for param in group["params"]
            if param.grad is not None and "slow" not in self.state[param]
        }
        loss = super().step(closure)
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state[param]
                if param in first:
                    state["slow"] = first[param]
                if "slow" in state and int(state["step"]) % self.k == 0:
                    slow = state["slow"]
                    slow.add_(param - slow, alpha=self.alpha)
                    param.copy_(slow)
        return loss
