"""The web page at /: plain HTML and JavaScript shipped with the package (no build step)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def page_html() -> str:
    """The page's HTML; it reads the model card from /v1/model and posts uploads to /v1/explain or /v1/predict."""
    return resources.files("vitkit.serve").joinpath("page.html").read_text(encoding="utf-8")
