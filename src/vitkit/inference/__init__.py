"""Inference: load any checkpoint with the preprocessing it was trained with, evaluate it, predict with it.

One layer below both `vitkit.training` and `vitkit.analysis` (it depends on models, checkpoints and data
only): `vitkit predict`, `vitkit eval` and `vitkit analyze` all load through `load_for_inference`, so a
checkpoint's inputs are prepared the same way everywhere.

What is read from a native checkpoint's config.json (written by `vitkit.save`); every key is optional and
read defensively, so trainers must keep writing these keys with these meanings:

    "class_names": [str, ...]                 # the head's labels, in output order
    "metadata": {
        "precision": "fp32" | "bf16" | "fp16",  # the run's autocast; inference uses it (fp16 -> fp32)
        "data": {                             # the preprocessing; mean and std make it "checkpoint metadata"
            "img_size": int,                  # side of the square input (default: the model's img_size)
            "mean": [float, float, float],    # per-channel normalisation of pixels in [0, 1]
            "std": [float, float, float],
            "path": str,                      # the training data as given ("digits", a folder, CIFAR)
            "absolute_path": str,             # the same, resolved at training time
            "val_fraction": float,            # seeded held-out share of data without its own split
            "seed": int,
        },
        "training": {"data": {...}},          # the recipe; only its data section (DataConfig fields) is read,
    }                                         # to evaluate the run's own data exactly as training split it

A checkpoint without metadata["data"] mean/std (foreign weights, a bare `vitkit.save`, `vitkit convert`)
gets transformers' preprocessor_config.json or timm's hub config.json when its directory has one, else
its format's convention (0.5 for vitkit, JAX, transformers and timm ViTs), with
`Preprocessing.source` = "default (no metadata): <convention>" and a logged warning.
"""

from typing import TYPE_CHECKING

from vitkit.lazy import lazy_package

if TYPE_CHECKING:
    from vitkit.inference.device import autocast, resolve_device
    from vitkit.inference.evaluate import (
        EvalData,
        EvalResult,
        Evaluation,
        check_class_names,
        evaluate,
        evaluate_checkpoint,
        plot_confusion,
        select_eval_data,
    )
    from vitkit.inference.loading import (
        LoadedModel,
        Preprocessing,
        load_for_inference,
        read_preprocessing,
        resolve_checkpoint,
        with_precision,
    )
    from vitkit.inference.modes import INFERENCE_PRECISIONS, PRECISIONS, TRAINING_PRECISIONS
    from vitkit.inference.predict import Prediction, predict_files, predict_logits

__all__ = [
    "INFERENCE_PRECISIONS",
    "PRECISIONS",
    "TRAINING_PRECISIONS",
    "EvalData",
    "EvalResult",
    "Evaluation",
    "LoadedModel",
    "Prediction",
    "Preprocessing",
    "autocast",
    "check_class_names",
    "evaluate",
    "evaluate_checkpoint",
    "load_for_inference",
    "plot_confusion",
    "predict_files",
    "predict_logits",
    "read_preprocessing",
    "resolve_checkpoint",
    "with_precision",
    "resolve_device",
    "select_eval_data",
]

lazy_package(
    __name__,
    {
        "vitkit.inference.device": ("autocast", "resolve_device"),
        "vitkit.inference.modes": ("INFERENCE_PRECISIONS", "PRECISIONS", "TRAINING_PRECISIONS"),
        "vitkit.inference.evaluate": (
            "EvalData",
            "EvalResult",
            "Evaluation",
            "check_class_names",
            "evaluate",
            "evaluate_checkpoint",
            "plot_confusion",
            "select_eval_data",
        ),
        "vitkit.inference.loading": (
            "LoadedModel",
            "Preprocessing",
            "load_for_inference",
            "read_preprocessing",
            "resolve_checkpoint",
            "with_precision",
        ),
        "vitkit.inference.predict": ("Prediction", "predict_files", "predict_logits"),
    },
)
