"""Matplotlib drawings of the analysis arrays; each function returns PNG bytes (no pyplot global state)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

DPI = 100


def to_png(figure: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def scale_unit(values: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] (a constant array becomes all zeros)."""
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def mosaic(tiles: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
    """Tile (n, h, w[, c]) arrays into one image with NaN gaps, `columns` per row (one imshow is fast)."""
    count, height, width = tiles.shape[:3]
    rows = -(-count // columns)
    shape = (rows * (height + pad) - pad, columns * (width + pad) - pad) + tiles.shape[3:]
    canvas = np.full(shape, np.nan)
    for index, tile in enumerate(tiles):
        top, left = (index // columns) * (height + pad), (index % columns) * (width + pad)
        canvas[top : top + height, left : left + width] = tile
    return canvas


def attention_figure(
    image: np.ndarray, rollout: np.ndarray, heads: np.ndarray, title: str, head_columns: int = 6
) -> bytes:
    """Input, rollout overlay and rollout-masked input (paper Fig. 6), then the last layer's heads (Fig. 13).

    `image` is (H, W, 3) in [0, 1]; `rollout` (H, W) and `heads` (heads, H, W) already upsampled to the image.
    """
    num_heads = heads.shape[0]
    columns = max(3, min(num_heads, head_columns))
    head_rows = -(-num_heads // columns)
    figure = Figure(figsize=(2.0 * columns, 2.1 * (1 + head_rows)))
    grid = figure.add_gridspec(1 + head_rows, columns)
    mask = scale_unit(rollout)
    panels = [
        ("input", image, None),
        ("attention rollout", image, mask),
        ("input x rollout", image * mask[..., None], None),
    ]
    for column, (name, picture, overlay) in enumerate(panels):
        axis = figure.add_subplot(grid[0, column])
        axis.imshow(picture)
        if overlay is not None:
            axis.imshow(overlay, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axis.set_title(name, fontsize=8)
        axis.axis("off")
    for head in range(num_heads):
        axis = figure.add_subplot(grid[1 + head // columns, head % columns])
        axis.imshow(image)
        axis.imshow(scale_unit(heads[head]), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axis.set_title(f"last layer, head {head + 1}", fontsize=7)
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    return to_png(figure)


def posemb_similarity_figure(similarity: np.ndarray, posemb: str) -> bytes:
    """Paper Fig. 7 (centre): one small heatmap per patch position, laid out like the patches."""
    gh, gw = similarity.shape[:2]
    tiles = similarity.reshape(gh * gw, gh, gw)
    canvas = mosaic(tiles, columns=gw)
    figure = Figure(figsize=(6, 6 * canvas.shape[0] / canvas.shape[1] + 0.6))
    axis = figure.add_subplot()
    image = axis.imshow(canvas, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    axis.set_xticks([(gw + 1) * c + (gw - 1) / 2 for c in range(gw)], [str(c + 1) for c in range(gw)], fontsize=6)
    axis.set_yticks([(gh + 1) * r + (gh - 1) / 2 for r in range(gh)], [str(r + 1) for r in range(gh)], fontsize=6)
    axis.set_xlabel("input patch column")
    axis.set_ylabel("input patch row")
    axis.tick_params(length=0)
    axis.set_title(f"Position embedding similarity ({posemb})", fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="cosine similarity")
    return to_png(figure)


def embedding_filters_figure(filters: np.ndarray, columns: int = 7) -> bytes:
    """Paper Fig. 7 (left): each principal component of the patch-embedding filters as a (min-max scaled) patch."""
    tiles = np.stack([scale_unit(f) for f in filters])
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    elif tiles.shape[-1] != 3:
        tiles = tiles[..., :3]  # more than three input channels: show the first three as RGB
    columns = min(columns, len(tiles))
    canvas = mosaic(tiles, columns=columns)
    canvas = np.where(np.isnan(canvas), 1.0, canvas)  # white gaps between the filters
    figure = Figure(figsize=(0.8 * columns + 0.4, 0.8 * (-(-len(tiles) // columns)) + 0.6))
    axis = figure.add_subplot()
    axis.imshow(canvas, interpolation="nearest")
    axis.axis("off")
    axis.set_title(f"RGB embedding filters (first {len(tiles)} principal components)", fontsize=9)
    return to_png(figure)


def mean_distance_figure(distances: np.ndarray, img_size: tuple[int, int]) -> bytes:
    """Paper Fig. 7 (right): mean attention distance of every head against network depth, one dot per head."""
    layers, heads = distances.shape
    figure = Figure(figsize=(5, 3.6))
    axis = figure.add_subplot()
    depth = np.repeat(np.arange(1, layers + 1), heads)
    axis.scatter(depth, distances.reshape(-1), s=14, alpha=0.8)
    axis.set_xlabel("network depth (layer)")
    axis.set_ylabel("mean attention distance (pixels)")
    axis.set_xticks(range(1, layers + 1))
    axis.set_ylim(0, max(float(np.hypot(*img_size)) / 2, float(distances.max()) * 1.05 + 1e-9))
    axis.set_title(f"{heads} heads per layer, {img_size[0]}x{img_size[1]} input", fontsize=9)
    axis.grid(alpha=0.3)
    return to_png(figure)
