"""Accuracy of a model on a labelled source; it lives in `vitkit.inference` (below training), re-exported here."""

from vitkit.inference.evaluate import EvalResult, evaluate, plot_confusion

__all__ = ["EvalResult", "evaluate", "plot_confusion"]
