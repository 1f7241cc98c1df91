"""`knob`: a dataclass field whose help text lives with it (read by the command line and by docs).

Kept as an import path for the model and data configs; the mechanism itself is `vitkit.configs`.
"""

from __future__ import annotations

from vitkit.configs import help_of, knob

__all__ = ["help_of", "knob"]
