"""The names a recipe or flag may give for precision and test-time augmentation (torch-free: recipes are checked,
and `vitkit train --help` is built, without importing torch)."""

from __future__ import annotations

# Every precision vitkit computes in, and the subsets each side accepts.
PRECISIONS = ("fp32", "bf16", "fp16")
TRAINING_PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # "auto": the runtime's timed probe picks bf16 or fp32
INFERENCE_PRECISIONS = ("fp32", "bf16")  # a run trained in fp16 is evaluated in fp32

TTA_MODES = ("none", "flip", "multicrop")  # test-time views (vitkit.inference.tta)
