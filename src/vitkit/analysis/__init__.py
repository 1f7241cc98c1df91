"""Looking inside a ViT (paper Sec. 4.5): attention rollout, attention distance, position embeddings, filters.

Every function returns NumPy arrays, for notebooks; `analyze_checkpoint` is what `vitkit analyze` runs.
"""

from vitkit.analysis.attention import (
    attention_rollout,
    head_maps,
    last_layer_head_maps,
    mean_attention_distance,
    mean_distance_from_attentions,
    patch_distances,
    rollout_from_attentions,
    rollout_map,
)
from vitkit.analysis.embeddings import (
    cosine_similarity_grid,
    embedding_filters,
    patch_position_embeddings,
    posemb_similarity,
    row_col_similarity,
)
from vitkit.analysis.report import analyze_checkpoint

__all__ = [
    "analyze_checkpoint",
    "attention_rollout",
    "cosine_similarity_grid",
    "embedding_filters",
    "head_maps",
    "last_layer_head_maps",
    "mean_attention_distance",
    "mean_distance_from_attentions",
    "patch_distances",
    "patch_position_embeddings",
    "posemb_similarity",
    "rollout_from_attentions",
    "rollout_map",
    "row_col_similarity",
]
