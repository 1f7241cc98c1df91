"""What the model learned before the first block: position-embedding similarity and patch-embedding filters.

Paper Fig. 7 (left and centre), Sec. 4.5 and Appendix D.4.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vitkit.errors import UsageError
from vitkit.models import VisionTransformer


def has_position_embedding(model: VisionTransformer) -> bool:
    """False for models built with posemb='none', which have nothing to compare."""
    return model.config.posemb != "none"


@torch.no_grad()
def patch_position_embeddings(model: VisionTransformer) -> torch.Tensor:
    """(gh * gw, D) embeddings of the patch positions at the model's resolution, class-token position dropped."""
    if not has_position_embedding(model):
        raise UsageError("this model has no position embedding (posemb='none'): there is no similarity to show")
    grid = model.config.grid_size
    table = model.pos_embed(grid)[0]
    prefix = model.num_prefix_tokens if model.pos_embed.covers_prefix() else 0
    return table[prefix:].detach().float().cpu()


def cosine_similarity_grid(embeddings: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """(gh, gw, gh, gw): cosine similarity of the embedding at each position with the one at every position."""
    if embeddings.shape[0] != grid[0] * grid[1]:
        raise UsageError(f"{embeddings.shape[0]} embeddings do not fill a {grid[0]}x{grid[1]} grid")
    unit = torch.nn.functional.normalize(embeddings.double(), dim=-1)
    return (unit @ unit.T).reshape(grid[0], grid[1], grid[0], grid[1]).numpy()


def posemb_similarity(model: VisionTransformer) -> np.ndarray:
    """(gh, gw, gh, gw) cosine similarity between the position embeddings of every pair of patch positions."""
    return cosine_similarity_grid(patch_position_embeddings(model), model.config.grid_size)


def row_col_similarity(similarity: np.ndarray) -> dict[str, float]:
    """Mean similarity of position pairs sharing a row or a column (self-pairs excluded) and of all other pairs."""
    gh, gw = similarity.shape[:2]
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    flat = similarity.reshape(gh * gw, gh * gw)
    same_row, same_col = rows[:, None] == rows[None], cols[:, None] == cols[None]
    self_pair = np.eye(gh * gw, dtype=bool)
    shared = (same_row | same_col) & ~self_pair
    other = ~(same_row | same_col)
    return {
        "same_row_or_col": float(flat[shared].mean()) if shared.any() else float("nan"),
        "other": float(flat[other].mean()) if other.any() else float("nan"),
    }


@torch.no_grad()
def embedding_filters(model: VisionTransformer, num_components: int = 28) -> np.ndarray:
    """(k, Ph, Pw, C) top principal components of the patch-embedding filters E, as the paper's Fig. 7 (left).

    The D filters, each flattened to C*Ph*Pw values, are the samples; they are centred and decomposed by SVD.
    k = min(num_components, D - 1, C*Ph*Pw): centred D filters span at most D - 1 directions, and there are
    no more components than pixel values. Signs are fixed so that each component's largest entry is positive.
    """
    if num_components < 1:
        raise UsageError(f"num_components must be at least 1, got {num_components}")
    weight = model.patch_embed.proj.weight.detach().double().cpu()  # (D, C, Ph, Pw)
    dim, chans, ph, pw = weight.shape
    count = min(num_components, dim - 1, chans * ph * pw)
    if count < 1:
        raise UsageError(f"a hidden width of {dim} leaves no principal components to show")
    flat = weight.reshape(dim, -1)
    _, _, right = torch.linalg.svd(flat - flat.mean(dim=0), full_matrices=False)
    components = right[:count]
    peaks = components.gather(1, components.abs().argmax(dim=1, keepdim=True))
    components = components * torch.sign(peaks)
    return components.reshape(count, chans, ph, pw).permute(0, 2, 3, 1).numpy()


def token_cosine(states: Sequence[torch.Tensor], first: int = 0, second: int = 1) -> torch.Tensor:
    """Per (B, T, D) state, the batch mean of the cosine similarity of tokens `first` and `second` -> (len(states),).

    DeiT (Touvron et al. 2021, Sec. 4) measures its class and distillation tokens this way: 0.06 as learned,
    0.93 at the output of the last layer.
    """
    if len(states) == 0:
        raise UsageError("no token states given: pass the hidden states of forward_with_details")
    pairs = [F.cosine_similarity(s[:, first].double(), s[:, second].double(), dim=-1).mean() for s in states]
    return torch.stack(pairs).float()
