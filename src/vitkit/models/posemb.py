"""Position-embedding builders (paper Sec. 3.1, Appendix D.4) and the one function that resamples them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.errors import UsageError


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10_000.0) -> torch.Tensor:
    """Fixed 2D sin-cos embedding of shape (H*W, dim): a quarter of the channels each for sin/cos of y and x."""
    if dim % 4:
        raise UsageError(f"sin-cos 2D position embeddings need a width divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    y = ys.reshape(-1, 1).double() * omega
    x = xs.reshape(-1, 1).double() * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).float()


def resample_posemb(
    posemb: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int], num_prefix_tokens: int = 0
) -> torch.Tensor:
    """Resize a learned (1, prefix + H*W, D) embedding to a new grid by 2D interpolation (paper Sec. 3.2).

    The prefix (class-token) positions are kept as they are. Used both by the model at a new input
    resolution and by checkpoint loading, so the two can never disagree.
    """
    new_grid, old_grid = tuple(new_grid), tuple(old_grid)
    if new_grid == old_grid:
        return posemb
    prefix, grid_part = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    if grid_part.shape[1] != old_grid[0] * old_grid[1]:
        raise UsageError(
            f"position embedding has {grid_part.shape[1]} grid positions, expected {old_grid[0]}x{old_grid[1]}"
        )
    dim = grid_part.shape[-1]
    image = grid_part.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    image = F.interpolate(image.float(), size=new_grid, mode="bicubic", align_corners=False)
    grid_part = image.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(posemb.dtype)
    return torch.cat([prefix, grid_part], dim=1)


def resample_axis(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resize a (positions, D) per-axis table of the learned 2D embedding by linear interpolation."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.T[None].float(), size=length, mode="linear", align_corners=False)
    return resized[0].T.to(table.dtype)


class PositionEmbedding(nn.Module):
    """E_pos of eq. (1) in one of four flavours; `forward(grid)` returns (1, tokens, D) for any grid."""

    def __init__(self, kind: str, grid: tuple[int, int], dim: int, num_prefix_tokens: int) -> None:
        super().__init__()
        self.kind, self.grid, self.dim = kind, tuple(grid), dim
        # Only the paper's learned 1D table covers the class token; the other kinds leave it unembedded.
        self.num_prefix_tokens = num_prefix_tokens if kind == "learned" else 0
        if kind == "learned":
            self.weight = nn.Parameter(torch.empty(1, self.num_prefix_tokens + grid[0] * grid[1], dim))
        elif kind == "learned_2d":
            self.row = nn.Parameter(torch.empty(grid[0], dim // 2))
            self.col = nn.Parameter(torch.empty(grid[1], dim // 2))
        elif kind == "sincos_2d":
            # Not persistent: it is a pure function of the grid, so checkpoints need not carry it.
            self.register_buffer("fixed", sincos_2d(grid, dim)[None], persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) for learned tables, as the reference implementation does."""
        for param in self.parameters():
            nn.init.normal_(param, std=0.02)

    def covers_prefix(self) -> bool:
        """Whether the returned embedding includes positions for the prefix tokens."""
        return self.num_prefix_tokens > 0

    def forward(self, grid: tuple[int, int]) -> torch.Tensor | None:
        """The embedding to add for a patch grid of `grid` (None when kind is 'none')."""
        if self.kind == "learned":
            return resample_posemb(self.weight, grid, self.grid, self.num_prefix_tokens)
        if self.kind == "learned_2d":
            rows, cols = resample_axis(self.row, grid[0]), resample_axis(self.col, grid[1])
            table = torch.cat([rows[:, None].expand(-1, grid[1], -1), cols[None].expand(grid[0], -1, -1)], dim=-1)
            return table.reshape(1, grid[0] * grid[1], self.dim)
        if self.kind == "sincos_2d":
            return self.fixed if tuple(grid) == self.grid else sincos_2d(grid, self.dim).to(self.fixed)[None]
        return None
