"""The paper's fine-tuning recipe (Sec. 3.2, App. B.1.1) as a TrainConfig for the one training loop.

Any pre-trained checkpoint (vitkit run or checkpoint, timm, Hugging Face, JAX .npz, hub id) loses its
pre-training head and pre-logits layer and gets a zero-initialised D x K head; its position embeddings are
resampled to the new resolution's grid. SGD with momentum 0.9, no weight decay, linear warm-up then cosine
decay to zero, gradient clipping at global norm 1, batch 512, a fixed number of steps. The defaults are the
paper's VTAB setting (lr 0.01, 2500 steps; Table 4 sweeps lr in {0.001, 0.003, 0.01, 0.03} and trains 500 to
20,000 steps per dataset); the warm-up of 100 steps is the JAX release's default. `recipes/finetune.yaml`
holds the same values (tests check it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from vitkit.models.config import ViTConfig
from vitkit.training.config import TrainConfig

log = logging.getLogger("vitkit.training")

FINETUNE: dict[str, dict[str, Any]] = {
    "model": {"new_head": True},
    # Inception crop and flip only (the release's fine-tuning input pipeline); no mixing, no smoothing.
    "augment": {
        "crop": "rrc", "rrc_scale": (0.05, 1.0), "hflip": True, "randaugment_n": 0, "mixup": 0.0, "cutmix": 0.0,
        "random_erasing": 0.0, "label_smoothing": 0.0,
    },
    "optim": {
        "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "schedule": "cosine",
        "warmup_steps": 100, "min_lr": 0.0, "clip_grad": 1.0,
    },
    "run": {"steps": 2500, "batch_size": 512},
}  # fmt: skip
# A linear probe reads fixed features: the frozen body runs without dropout (unless a flag says otherwise).
PROBE_OVERRIDES = {"model.dropout": 0.0, "model.attn_dropout": 0.0, "model.drop_path": 0.0}


def finetune_defaults() -> TrainConfig:
    """The recipe without a checkpoint or data (what `vitkit finetune --help` shows as defaults)."""
    return TrainConfig().replace(FINETUNE, origin="fine-tuning recipe")


def finetune_config(
    pretrained: str | Path, data: str, img_size: int | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """The fine-tuning recipe for checkpoint `pretrained` on `data` at `img_size` (default: the checkpoint's).

    `overrides` are dotted keys ("optim.lr", "run.steps", "optim.linear_probe", ...) applied last. The data
    are normalised as the checkpoint was pre-trained (its metadata, a foreign settings file or its format's
    convention; see `vitkit.inference.read_preprocessing`) unless "data.mean" / "data.std" are given.
    """
    # Reading checkpoints imports torch: here, not at import, so that `vitkit finetune --help` does not.
    from vitkit.checkpoints import read_checkpoint
    from vitkit.inference import read_preprocessing, resolve_checkpoint

    overrides = dict(overrides or {})
    path = resolve_checkpoint(pretrained)  # a run directory gives its best checkpoint; hub ids are downloaded
    checkpoint = read_checkpoint(path, num_heads=overrides.get("model.num_heads"))
    # read_preprocessing reads only the model's config and class names: no need to build the model here.
    prep = read_preprocessing(path, SimpleNamespace(config=checkpoint.config, class_names=checkpoint.class_names))
    log.info("fine-tuning %s: inputs normalised with mean %s, std %s (%s)", path, prep.mean, prep.std, prep.source)
    recipe = {
        **FINETUNE,
        "model": {**FINETUNE["model"], "name": checkpoint.config.name or path.name, "pretrained": str(path)},
        "data": {"path": str(data), "img_size": img_size or prep.img_size, "mean": prep.mean, "std": prep.std},
    }
    config = TrainConfig().replace(recipe, origin="fine-tuning recipe")
    if overrides.get("optim.linear_probe") and isinstance(checkpoint.config, ViTConfig):
        overrides = {**PROBE_OVERRIDES, **overrides}
    return config.replace(overrides, origin="command line")
