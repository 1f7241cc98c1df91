"""Using a trained checkpoint: this moved to `vitkit.inference` (below training); the old names still work here."""

from vitkit.inference.evaluate import check_class_names, evaluate_checkpoint
from vitkit.inference.loading import Preprocessing, load_for_inference, resolve_checkpoint
from vitkit.inference.loading import read_preprocessing as preprocessing
from vitkit.inference.predict import Prediction, predict_files

__all__ = [
    "Prediction",
    "Preprocessing",
    "check_class_names",
    "evaluate_checkpoint",
    "load_for_inference",
    "predict_files",
    "preprocessing",
    "resolve_checkpoint",
]
