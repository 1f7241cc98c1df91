"""Writing a file so that no reader ever sees half of it: a scratch file beside it, renamed over it."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a scratch file renamed over it: a killed writer, or a concurrent reader (another
    rank, another run), finds the old content or the new, never a partial file."""
    path = Path(path)
    scratch = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    scratch.write_text(text)
    os.replace(scratch, path)
