"""An on-disk cache of decoded datasets, keyed by a hash of the file list (names, sizes, mtimes) and decode settings."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("vitkit.data")

CACHE_VERSION = 2  # bump when the stored layout or the decode rules change, so stale entries are never read


def cache_root(cache_dir: str | None) -> Path:
    """The cache directory: `cache_dir` if given, else $VITKIT_CACHE, else ~/.cache/vitkit."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("VITKIT_CACHE") or Path.home() / ".cache" / "vitkit").expanduser()


def content_key(files: list[tuple[str, int, int]], params: dict[str, Any]) -> str:
    """A hex digest of (relative path, size, mtime_ns) for every file plus the decode parameters."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_VERSION, **params}, sort_keys=True).encode())
    for name, size, mtime in files:
        digest.update(f"{name}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()[:32]


def cache_path(root: Path, kind: str, key: str) -> Path:
    """Where the entry `key` of kind `kind` ("images" or "index") lives."""
    return root / f"{kind}-{key}.pt"


def load_entry(path: Path) -> dict[str, Any] | None:
    """Read a cache entry, memory-mapped so the second run starts at once; None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a torn or foreign file is a cache miss, never a crash
        logger.warning("ignoring unreadable cache entry %s: %s", path, error)
        return None


def save_entry(path: Path, entry: dict[str, Any]) -> None:
    """Write a cache entry atomically (temp file + rename), so a killed run never leaves a half-written entry."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        torch.save(entry, scratch)
        os.replace(scratch, path)
    except OSError as error:  # a read-only or full cache disk costs speed, not the run
        logger.warning("could not write cache entry %s: %s", path, error)
