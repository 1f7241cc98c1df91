"""`vitkit analyze`: run every analysis on a checkpoint and some images; write PNGs, analysis.json, report.html."""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitkit.analysis import figures
from vitkit.analysis.attention import (
    check_attentions,
    head_maps,
    mean_distance_from_attentions,
    rollout_from_attentions,
    rollout_map,
    upsample_maps,
)
from vitkit.analysis.embeddings import (
    embedding_filters,
    has_position_embedding,
    posemb_similarity,
    row_col_similarity,
    token_cosine,
)
from vitkit.analysis.inputs import dataset_images, denormalize, load_images
from vitkit.errors import MissingPathError, UsageError
from vitkit.inference import Preprocessing, load_for_inference
from vitkit.models import VisionTransformer
from vitkit.models.config import check_divisible

log = logging.getLogger(__name__)


@dataclass
class ImageAnalysis:
    """Per-image results: display pixels, rollout and last-layer head maps (upsampled), top predictions."""

    path: Path
    pixels: np.ndarray  # (H, W, 3) in [0, 1]
    rollout: np.ndarray  # (H, W)
    heads: np.ndarray  # (heads, H, W)
    top: list[tuple[str, float]] = field(default_factory=list)
    dist_rollout: np.ndarray | None = None  # (H, W), DeiT's distillation token (None without one)
    dist_heads: np.ndarray | None = None  # (heads, H, W)


@dataclass
class ModelAnalysis:
    """Model-level results: attention distance, position-embedding similarity, embedding filters."""

    mean_distance: np.ndarray  # (layers, heads) pixels
    posemb_similarity: np.ndarray | None  # (gh, gw, gh, gw); None for posemb='none'
    filters: np.ndarray | None  # (k, Ph, Pw, C); None for a hybrid, whose tokens come from a CNN, not pixel patches
    token_similarity: dict[str, Any] | None = None  # DeiT: cosine of the class and distillation tokens


@dataclass
class ChunkAnalysis:
    """What one explicit-attention forward pass over a chunk of images gives."""

    rollouts: np.ndarray  # (B, H, W) of the image representation (class token, or token mean for GAP)
    heads: np.ndarray  # (B, heads, H, W) last layer
    distance: torch.Tensor  # (layers, heads) pixels, mean over the chunk
    tops: list
    dist_rollouts: np.ndarray | None = None  # the same two maps for DeiT's distillation token
    dist_heads: np.ndarray | None = None
    token_cosine: torch.Tensor | None = None  # (L + 2,) class vs distillation token: z_0 .. z_L, final norm


def top_predictions(logits: torch.Tensor, class_names: Sequence[str] | None, k: int = 5) -> list[list[tuple]]:
    """Per image, the k most probable (label, probability) pairs; labels are 'class i' without class names."""
    if logits.shape[-1] == 0:
        return [[] for _ in range(logits.shape[0])]
    probs = logits.float().softmax(dim=-1)
    values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
    rows = []
    for row_probs, row_indices in zip(values.tolist(), indices.tolist(), strict=True):
        labels = [class_names[i] if class_names else f"class {i}" for i in row_indices]
        rows.append(list(zip(labels, row_probs, strict=True)))
    return rows


@torch.no_grad()
def analyze_images(
    model: VisionTransformer,
    batch: torch.Tensor,
    paths: Sequence[Path],
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 16,
) -> tuple[list[ImageAnalysis], np.ndarray]:
    """Per-image maps and predictions, and the (layers, heads) mean attention distance over all the images."""
    if len(batch) == 0:
        raise UsageError("no images to analyse")
    model.eval()
    device = next(model.parameters()).device
    results, distance_sum, cosine_sum = [], 0.0, 0.0
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size].to(device)
        found = analyze_chunk(model, chunk)
        distance_sum = distance_sum + found.distance * len(chunk)
        if found.token_cosine is not None:
            cosine_sum = cosine_sum + found.token_cosine * len(chunk)
        pixels = denormalize(chunk, mean, std)
        for offset, path in enumerate(paths[start : start + len(chunk)]):
            image = ImageAnalysis(path, pixels[offset], found.rollouts[offset], found.heads[offset], found.tops[offset])
            if found.dist_rollouts is not None:
                image.dist_rollout, image.dist_heads = found.dist_rollouts[offset], found.dist_heads[offset]
            results.append(image)
    cosine = (cosine_sum / len(batch)).cpu().numpy() if isinstance(cosine_sum, torch.Tensor) else None
    return results, (distance_sum / len(batch)).cpu().numpy(), cosine


def analyze_chunk(model: VisionTransformer, chunk: torch.Tensor) -> ChunkAnalysis:
    """One explicit-attention forward pass: upsampled rollout and last-layer head maps, mean distance, top-5;
    for DeiT also the distillation token's maps and its similarity to the class token."""
    output = model.forward_with_details(chunk, attentions=True)
    prefix, grid = model.num_prefix_tokens, output.grid
    check_attentions(output.attentions, grid, prefix)
    size = tuple(chunk.shape[-2:])
    flow = rollout_from_attentions(output.attentions)

    def maps(token: int) -> tuple[np.ndarray, np.ndarray]:
        rollouts = upsample_maps(rollout_map(flow, grid, prefix, token), size)
        heads = upsample_maps(head_maps(output.attentions[-1], grid, prefix, token), size)
        return rollouts.cpu().numpy(), heads.cpu().numpy()

    distance = mean_distance_from_attentions(output.attentions, grid, model.config.patch_size, prefix)
    found = ChunkAnalysis(*maps(0), distance, top_predictions(output.logits, model.class_names))
    if model.config.distilled:
        found.dist_rollouts, found.dist_heads = maps(1)
        found.token_cosine = token_cosine([*output.hidden_states, output.features])
    return found


def analyze_model(
    model: VisionTransformer, mean_distance: np.ndarray, token_cosines: np.ndarray | None = None
) -> ModelAnalysis:
    """The image-independent analyses, plus what was already averaged over the images (distance, token cosines)."""
    similarity = posemb_similarity(model) if has_position_embedding(model) else None
    # A hybrid's tokens come from a CNN; SPT's from five stacked images after a LayerNorm: no RGB filters of E.
    filters = None if model.config.stem or model.config.spt else embedding_filters(model)
    result = ModelAnalysis(mean_distance, similarity, filters)
    if token_cosines is not None:
        result.token_similarity = distillation_token_similarity(model, token_cosines)
    return result


@torch.no_grad()
def distillation_token_similarity(model: VisionTransformer, cosines: np.ndarray) -> dict[str, Any]:
    """DeiT Sec. 4: cosine of the class and distillation tokens as learned, after each block, and at the output."""
    learned = torch.nn.functional.cosine_similarity(model.cls_token.flatten(), model.dist_token.flatten(), dim=0)
    return {
        "learned_tokens": round(float(learned), 4),
        "by_layer": [round(float(v), 4) for v in cosines[:-1]],
        "output": round(float(cosines[-1]), 4),
        "note": "cosine similarity of the class and distillation tokens, mean over the images: the learned tokens; "
        "by_layer z_0 (tokens + position embedding) .. z_L; output after the final LayerNorm (the heads' inputs). "
        "DeiT reports 0.06 for the learned tokens and 0.93 at the last layer",
    }


def model_summary(model: VisionTransformer, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The facts the report's header shows."""
    config = model.config
    return {
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "name": config.name or "(unnamed)",
        "img_size": list(config.img_size),
        "patch_size": list(config.patch_size),
        "grid": list(config.grid_size),
        "hidden_dim": config.hidden_dim,
        "depth": config.depth,
        "num_heads": config.num_heads,
        "mlp_dim": config.mlp_dim,
        "pool": config.pool,
        "posemb": config.posemb,
        "num_classes": config.num_classes,
        "distilled": config.distilled,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def analysis_document(
    summary: dict[str, Any], images: Sequence[ImageAnalysis], result: ModelAnalysis, files: dict[str, Any]
) -> dict[str, Any]:
    """The content of analysis.json."""
    similarity = None
    if result.posemb_similarity is not None:
        similarity = {"posemb": summary["posemb"], **row_col_similarity(result.posemb_similarity)}
    return {
        "model": summary,
        "mean_attention_distance": [[round(float(v), 4) for v in row] for row in result.mean_distance],
        "mean_attention_distance_note": "pixels of the model input; one row per layer, one value per head; "
        "patch-to-patch attention only, renormalised over patch keys, averaged over queries and images",
        "posemb_similarity": similarity,
        "embedding_filter_components": None if result.filters is None else len(result.filters),
        "distillation_token": result.token_similarity,
        "images": [
            {
                "path": str(image.path),
                "figure": files["images"][index],
                **({"figure_dist": files["images_dist"][index]} if "images_dist" in files else {}),
                "top5": [{"label": label, "probability": round(prob, 6)} for label, prob in image.top],
            }
            for index, image in enumerate(images)
        ],
        "figures": {k: v for k, v in files.items() if k not in ("images", "images_dist")},
    }


def figure_name(index: int, path: Path, kind: str = "attention") -> str:
    """A file name for an image's attention figure: numbered (names may repeat across folders), safe characters."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem)[:60] or "image"
    return f"{kind}_{index:03d}_{stem}.png"


def write_figures(
    out: Path, images: Sequence[ImageAnalysis], result: ModelAnalysis, posemb: str, img_size: tuple[int, int]
) -> dict[str, Any]:
    """Draw and write every PNG; returns {figure key: file name} (per-image names under 'images')."""
    pngs: dict[str, bytes] = {}
    names, dist_names = [], []
    for index, image in enumerate(images):
        title = f"{image.path.name}: " + (f"{image.top[0][0]} ({image.top[0][1]:.1%})" if image.top else "")
        names.append(figure_name(index, image.path))
        pngs[names[-1]] = figures.attention_figure(image.pixels, image.rollout, image.heads, title)
        if image.dist_rollout is not None:
            dist_names.append(figure_name(index, image.path, "attention_dist"))
            pngs[dist_names[-1]] = figures.attention_figure(
                image.pixels, image.dist_rollout, image.dist_heads, f"{title} (distillation token)"
            )
    files: dict[str, Any] = {"images": names, **({"images_dist": dist_names} if dist_names else {})}
    if result.posemb_similarity is not None:
        files["posemb_similarity"] = "posemb_similarity.png"
        pngs["posemb_similarity.png"] = figures.posemb_similarity_figure(result.posemb_similarity, posemb)
    if result.filters is not None:
        files["embedding_filters"] = "embedding_filters.png"
        pngs["embedding_filters.png"] = figures.embedding_filters_figure(result.filters)
    files["mean_attention_distance"] = "mean_attention_distance.png"
    pngs["mean_attention_distance.png"] = figures.mean_distance_figure(result.mean_distance, img_size)
    for name, data in pngs.items():
        (out / name).write_bytes(data)
    return files


# Sets data-images-drawn / data-images-broken on <body> once the page has loaded, so a headless browser
# (and the test) can tell that every inline image decoded and was drawn.
_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var drawn = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-total", String(images.length));
  document.body.setAttribute("data-images-drawn", String(drawn));
  document.body.setAttribute("data-images-broken", String(images.length - drawn));
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 0.9em; }
img { max-width: 100%; }
section { margin-bottom: 2em; }
.note { color: #555; font-size: 0.9em; }
"""


def _img(out: Path, name: str, alt: str) -> str:
    """An <img> with the PNG inlined as a data URI (the page must work offline, as one file)."""
    encoded = base64.b64encode((out / name).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """A small HTML table, every cell escaped."""
    head = "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def render_html(out: Path, document: dict[str, Any]) -> str:
    """The self-contained report page: model summary, per-image predictions and maps, model-level figures."""
    name = html.escape(document["model"]["name"])
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>vitkit analyze: {name}</title><style>{_STYLE}</style>",
        f"<script>{_CHECK_SCRIPT}</script></head><body>",
        f"<h1>vitkit analyze: {name}</h1>",
        "<section><h2>Model</h2>" + _table(list(document["model"].items())) + "</section>",
        *_image_sections(out, document),
        *_model_sections(out, document),
        "</body></html>",
    ]
    return "\n".join(parts)


def _image_sections(out: Path, document: dict[str, Any]) -> list[str]:
    """One section per image: its top predictions and its attention figure."""
    source = "class token" if document["model"]["pool"] == "token" else "mean over tokens (GAP model)"
    parts = [
        "<h2>Images</h2>",
        f"<p class='note'>Attention rollout (Abnar &amp; Zuidema 2020) from the {source}, and the last layer's "
        "attention per head (paper Fig. 6 and 13).</p>",
    ]
    for image in document["images"]:
        title = html.escape(Path(image["path"]).name)
        predictions = _table([(p["label"], f"{p['probability']:.2%}") for p in image["top5"]], ("label", "prob."))
        parts += [
            f"<section><h3>{title}</h3><p class='note'>{html.escape(image['path'])}</p>",
            predictions if image["top5"] else "<p>(the model has no classification head)</p>",
            _img(out, image["figure"], f"attention maps of {Path(image['path']).name}"),
        ]
        if "figure_dist" in image:
            parts += [
                "<p class='note'>The same maps for the distillation token (DeiT).</p>",
                _img(out, image["figure_dist"], f"distillation-token attention of {Path(image['path']).name}"),
            ]
        parts.append("</section>")
    return parts


def _model_sections(out: Path, document: dict[str, Any]) -> list[str]:
    """The three model-level figures: attention distance, position-embedding similarity, embedding filters."""
    figs, similarity = document["figures"], document["posemb_similarity"]
    parts = _token_section(document["distillation_token"]) + [
        "<section><h2>Mean attention distance</h2>",
        "<p class='note'>Per head, the attention-weighted distance in input pixels between query and key patch "
        "centres (patch-to-patch attention, renormalised over patch keys), averaged over the images above; "
        "paper Fig. 7 right and Fig. 11.</p>",
        _img(out, figs["mean_attention_distance"], "mean attention distance"),
        "</section><section><h2>Position-embedding similarity</h2>",
    ]
    if similarity is None:
        parts.append("<p>This model has no position embedding (posemb='none'); there is nothing to compare.</p>")
    else:
        parts += [
            "<p class='note'>Each small map: cosine similarity of one patch position's embedding with every other "
            "position's (paper Fig. 7 centre). Mean similarity of pairs sharing a row or column "
            f"{similarity['same_row_or_col']:.3f}; of all other pairs {similarity['other']:.3f}.</p>",
            _img(out, figs["posemb_similarity"], "position embedding similarity"),
        ]
    parts.append("</section><section><h2>Embedding filters</h2>")
    if "embedding_filters" in figs:
        parts += [
            "<p class='note'>Principal components of the patch-embedding filters E, each min-max scaled and shown as "
            "an RGB patch (paper Fig. 7 left).</p>",
            _img(out, figs["embedding_filters"], "embedding filters"),
        ]
    else:
        parts.append(
            "<p>A hybrid or a shifted-patch (SPT) model: its tokens come from a CNN's feature map or from the image "
            "and four shifted copies after a LayerNorm, not from pixel patches, so there are no RGB filters of E to "
            "show.</p>"
        )
    parts.append("</section>")
    return parts


def _token_section(tokens: dict[str, Any] | None) -> list[str]:
    """DeiT's class and distillation tokens: their cosine similarity through the network (empty without them)."""
    if tokens is None:
        return []
    rows = [("learned tokens", tokens["learned_tokens"])]
    rows += [(f"z_{layer}", value) for layer, value in enumerate(tokens["by_layer"])]
    rows.append(("output (after the final norm)", tokens["output"]))
    return [
        "<section><h2>Class and distillation tokens</h2>",
        f"<p class='note'>{html.escape(tokens['note'])}.</p>",
        _table(rows, ("where", "cosine similarity")),
        "</section>",
    ]


def gather_images(
    images: Sequence[str | Path], data: str | Path | None, num_images: int, out: Path, img_size: int
) -> tuple[list[Path], int]:
    """The image paths to analyse: those named, then `num_images` taken from `data`; and how many were named."""
    named = [Path(p) for p in images]
    for path in named:
        if not path.is_file():
            raise MissingPathError(f"image {path} not found")
    picked = dataset_images(data, num_images, out / "inputs", img_size) if data is not None else []
    return named + picked, len(named)


def analyze_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    images: Sequence[str | Path] = (),
    data: str | Path | None = None,
    num_images: int = 8,
    img_size: int | None = None,
    device: str = "cpu",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Everything `vitkit analyze` does; returns the analysis.json document."""
    if not images and data is None:
        raise UsageError("no images to analyse: name image files with --images and/or a dataset with --data")
    model, prep, resolved, _ = load_for_inference(checkpoint, device)
    if model.config.in_chans != 3:
        raise UsageError(f"analyze reads RGB images, but this model takes {model.config.in_chans} channels")
    size = analysis_size(model, prep, img_size)
    out = Path(out)
    paths, num_named = gather_images(images, data, num_images, out, size[0])
    mean, std = prep.mean, prep.std
    batch, good, skipped = load_images(paths, size, mean, std)
    named_bad = [f"cannot read image {p}: {why}" for p, why in skipped if p in paths[:num_named]]
    if named_bad:
        raise UsageError("; ".join(named_bad))
    for path, why in skipped:
        log.warning("skipping %s: %s", path, why)
    if len(good) == 0:
        raise UsageError(f"none of the {len(paths)} images could be read")
    per_image, distance, cosines = analyze_images(model, batch, good, mean, std, batch_size)
    result = analyze_model(model, distance, cosines)
    out.mkdir(parents=True, exist_ok=True)
    files = write_figures(out, per_image, result, model.config.posemb, size)
    document = analysis_document(model_summary(model, resolved), per_image, result, files)
    document["model"]["analysed_at"] = list(size)
    document["normalization"] = {"mean": list(mean), "std": list(std), "source": prep.source}
    (out / "analysis.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "report.html").write_text(render_html(out, document), encoding="utf-8")
    return document


def analysis_size(model: VisionTransformer, prep: Preprocessing, img_size: int | None) -> tuple[int, int]:
    """(H, W) to analyse at: --img-size, else the checkpoint's input size (a non-square model's own size)."""
    if img_size is not None:
        size = (img_size, img_size)
    else:
        height, width = model.config.img_size
        size = (prep.img_size, prep.img_size) if height == width else (height, width)
    check_divisible(size, model.config.patch_size)
    return size
