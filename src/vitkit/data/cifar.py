"""CIFAR-10 and CIFAR-100 in their official python-pickle format (Krizhevsky 2009), folder or .tar.gz."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitkit.data.sources import DatasetSplits, TensorSource

# Official file names: CIFAR-10's five data batches are the training set and test_batch the validation set;
# CIFAR-100 has one `train` and one `test` file and we use its 100 fine labels.
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"], "meta": "batches.meta"}
CIFAR100_FILES = {"train": ["train"], "val": ["test"], "meta": "meta"}
FOLDER_NAMES = ("cifar-10-batches-py", "cifar-100-python")

# The CIFAR files are pickles, and unpickling can run arbitrary code. These files hold only dicts of lists,
# bytes and numpy uint8 arrays, so the unpickler below resolves only the globals those need and refuses
# everything else: a tampered file fails with UnpicklingError instead of executing anything.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how a Python 3 pickle of protocol 2 spells bytes
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds builtins and numpy arrays and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"CIFAR file refers to {module}.{name}, which a CIFAR pickle never needs")
        return super().find_class(module, name)


def read_cifar_pickle(data: bytes) -> dict[bytes, Any]:
    """Unpickle one CIFAR file; keys come back as bytes because the files were written by Python 2."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()


def find_cifar(path: str | Path) -> tuple[Path, str] | None:
    """(location, "cifar10" | "cifar100") when `path` is an official CIFAR folder, its parent, or its .tar.gz."""
    path = Path(path)
    if path.is_file() and tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            names = {Path(m.name).name for m in archive.getmembers() if m.isfile()}
        return (path, _kind(names)) if _kind(names) else None
    if not path.is_dir():
        return None
    for candidate in (path, *(path / name for name in FOLDER_NAMES)):
        if candidate.is_dir():
            kind = _kind({p.name for p in candidate.iterdir() if p.is_file()})
            if kind:
                return candidate, kind
    return None


def _kind(names: set[str]) -> str | None:
    for kind, files in (("cifar10", CIFAR10_FILES), ("cifar100", CIFAR100_FILES)):
        if {files["meta"], *files["train"], *files["val"]} <= names:
            return kind
    return None


def _read_files(location: Path, names: list[str]) -> dict[str, dict[bytes, Any]]:
    """Read the named CIFAR files from a folder or from a tar archive (matched by base name)."""
    if location.is_dir():
        return {name: read_cifar_pickle((location / name).read_bytes()) for name in names}
    found = {}
    with tarfile.open(location) as archive:
        for member in archive.getmembers():
            base = Path(member.name).name
            if member.isfile() and base in names:
                found[base] = read_cifar_pickle(archive.extractfile(member).read())
    return found


def _split(batches: list[dict[bytes, Any]], label_key: bytes, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the batches into uint8 (N, 3, 32, 32) and int64 labels; rows are stored as R, G, B planes."""
    data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
    labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    if limit is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:limit] for c in np.unique(labels)])
        keep.sort()
        data, labels = data[keep], labels[keep]
    return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels)


def load_cifar(location: Path, kind: str, limit_per_class: int | None = None) -> DatasetSplits:
    """Load the official train and test splits (the test split is our validation split) into memory."""
    files = CIFAR10_FILES if kind == "cifar10" else CIFAR100_FILES
    label_key, names_key = (b"labels", b"label_names") if kind == "cifar10" else (b"fine_labels", b"fine_label_names")
    content = _read_files(location, [files["meta"], *files["train"], *files["val"]])
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in content[files["meta"]][names_key]]
    train = _split([content[n] for n in files["train"]], label_key, limit_per_class)
    val = _split([content[n] for n in files["val"]], label_key, limit_per_class)
    return DatasetSplits(TensorSource(*train, class_names), TensorSource(*val, class_names), class_names, [])
