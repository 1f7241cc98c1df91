"""Write a vitkit ViT or DeiT as a Hugging Face directory: `ViTForImageClassification` or
`DeiTForImageClassificationWithTeacher` (the reverse of `hf.py`).

The directory holds config.json (with id2label / label2id), model.safetensors in the names hub checkpoints use
(`vit.encoder.layer.N.attention.attention.query`, which every transformers version loads) and
preprocessor_config.json (`ViTImageProcessor`: the model's size, mean, std, bicubic resampling). It loads with
`ViTForImageClassification.from_pretrained(DIR)` (or `AutoModelForImageClassification`).

What transformers' classes cannot compute is refused: GAP (they classify from the class token), a hybrid stem or
pre-logits layer (`outbound.py`), a ConvNet.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vitkit.checkpoints.outbound import label_names, position_table, require_plain_vit, write_directory
from vitkit.errors import UsageError
from vitkit.models import Model

# vitkit activation -> transformers' hidden_act (the inverse of hf.ACTIVATIONS).
HIDDEN_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
PIL_BICUBIC = 3  # transformers stores the resampling filter as PIL's number


def write_hf(
    model: Model,
    path: str | Path,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    class_names: list[str] | None = None,
) -> Path:
    """Write `model` as a transformers image-classification directory at `path` (replaced whole); returns it."""
    config = require_plain_vit(model, "Hugging Face")
    if config.pool != "token":
        raise UsageError(
            "the model pools by GAP (pool='gap'); transformers' ViTForImageClassification classifies from the class "
            "token, so it cannot compute this model; convert it --to timm (global_pool='avg') or keep vitkit's format"
        )
    deit = config.distilled
    prefix = "deit." if deit else "vit."
    labels = label_names(model, class_names)
    document = {
        "architectures": ["DeiTForImageClassificationWithTeacher" if deit else "ViTForImageClassification"],
        "model_type": "deit" if deit else "vit",
        "hidden_size": config.hidden_dim,
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.mlp_dim,
        "hidden_act": HIDDEN_ACT[config.activation],
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": config.layer_norm_eps,
        "image_size": size_value(config.img_size),
        "patch_size": size_value(config.patch_size),
        "num_channels": config.in_chans,
        "qkv_bias": config.qkv_bias,
        "encoder_stride": config.patch_size[0],
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
        "torch_dtype": "float32",
    }
    processor = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": config.img_size[0], "width": config.img_size[1]},
        "resample": PIL_BICUBIC,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
    }
    documents = {"config.json": document, "preprocessor_config.json": processor}
    return write_directory(path, documents, hf_state_dict(model, prefix))


def size_value(pair: tuple[int, int]) -> int | list[int]:
    """An int for a square size (what transformers writes), else [height, width]."""
    return pair[0] if pair[0] == pair[1] else list(pair)


def hf_state_dict(model: Model, prefix: str) -> dict[str, torch.Tensor]:
    """vitkit's weights under transformers' hub names, query/key/value split out of the fused qkv."""
    state = {key: value.detach().float().cpu() for key, value in model.state_dict().items()}
    out = {
        f"{prefix}embeddings.cls_token": state["cls_token"],
        f"{prefix}embeddings.position_embeddings": position_table(model),
        f"{prefix}embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        f"{prefix}embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        f"{prefix}layernorm.weight": state["norm.weight"],
        f"{prefix}layernorm.bias": state["norm.bias"],
    }
    if "dist_token" in state:
        out[f"{prefix}embeddings.distillation_token"] = state["dist_token"]
    for i in range(model.config.depth):
        src, dst = f"blocks.{i}.", f"{prefix}encoder.layer.{i}."
        for kind in ("weight", "bias"):
            fused = state.get(f"{src}attn.qkv.{kind}")
            if fused is not None:
                for name, part in zip(("query", "key", "value"), fused.chunk(3, dim=0), strict=True):
                    out[f"{dst}attention.attention.{name}.{kind}"] = part
            for vitkit_name, hf_name in (
                ("norm1", "layernorm_before"),
                ("attn.proj", "attention.output.dense"),
                ("norm2", "layernorm_after"),
                ("mlp.fc1", "intermediate.dense"),
                ("mlp.fc2", "output.dense"),
            ):
                out[f"{dst}{hf_name}.{kind}"] = state[f"{src}{vitkit_name}.{kind}"]
    heads = {"head": "cls_classifier", "head_dist": "distillation_classifier"} if model.config.distilled else {}
    for vitkit_name, hf_name in (heads or {"head": "classifier"}).items():
        for kind in ("weight", "bias"):
            out[f"{hf_name}.{kind}"] = state[f"{vitkit_name}.{kind}"]
    return {key: value.contiguous() for key, value in out.items()}
