"""Which columns of a Hugging Face dataset hold the images and the labels: named, or inferred from its features."""

from __future__ import annotations

import logging
from typing import Any

from vitkit.data.config import DataConfig
from vitkit.errors import UsageError

logger = logging.getLogger("vitkit.data")

LABEL_NAMES = ("label", "labels")  # an int column so named is the label column when no ClassLabel is


def require_datasets() -> Any:
    """The `datasets` module, or an error saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise UsageError(
            "--data hf:... needs Hugging Face's datasets package: pip install 'vitkit[hf]' (or pip install datasets)"
        ) from None
    return datasets


def find_columns(features: Any, config: DataConfig, where: str) -> tuple[str, str | None, list[str] | None]:
    """(image column, label column or None, ClassLabel names or None), named by config or inferred from `features`."""
    datasets = require_datasets()
    if features is None:
        raise UsageError(f"{where}: the dataset does not declare its features, so its columns cannot be found")
    listed = ", ".join(f"{name} ({type(f).__name__})" for name, f in features.items())
    images = [name for name, f in features.items() if isinstance(f, datasets.Image)]
    image = config.image_column
    if image is None:
        if len(images) != 1:
            what = "no Image column" if not images else f"several Image columns ({', '.join(images)})"
            raise UsageError(f"{where} has {what}; its columns: {listed}; name one with --image-column NAME")
        image = images[0]
    elif image not in features or not isinstance(features[image], datasets.Image):
        found = f"is {features[image]!r}" if image in features else "does not exist"
        raise UsageError(
            f"--image-column {image}: the column {found}; {where} has: {listed} (cast a column of encoded images "
            f"with ds.cast_column(NAME, datasets.Image()))"
        )
    label = config.label_column
    if label is None:
        labels = [name for name, f in features.items() if isinstance(f, datasets.ClassLabel)]
        if len(labels) > 1:
            raise UsageError(
                f"{where} has several ClassLabel columns ({', '.join(labels)}); name one with --label-column NAME"
            )
        named = [n for n in LABEL_NAMES if n in features and _is_int(features[n])]
        label = (labels or named or [None])[0]
        if label is None:
            logger.info("%s: no label column (columns: %s); read as one class of unlabelled images", where, listed)
            return image, None, None
    elif label not in features:
        raise UsageError(f"--label-column {label}: {where} has no such column; its columns: {listed}")
    feature = features[label]
    if isinstance(feature, datasets.ClassLabel):
        return image, label, list(feature.names)
    if not _is_int(feature):
        raise UsageError(
            f"{where}: the label column '{label}' is {feature!r}, neither a ClassLabel nor an int; encode it with "
            f"ds.class_encode_column('{label}') and save the dataset again"
        )
    return image, label, None


def _is_int(feature: Any) -> bool:
    return type(feature).__name__ == "Value" and str(feature.dtype).startswith(("int", "uint"))
