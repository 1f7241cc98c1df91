"""`hf:PATH_OR_NAME[:SPLIT]`: which dataset, which splits; `load_hf` builds the train and val sources."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vitkit.checkpoints.hub import unreachable_errors
from vitkit.data.cache import cache_root
from vitkit.data.config import DataConfig
from vitkit.data.hf.columns import find_columns, require_datasets
from vitkit.data.hf.indexed import indexed_splits
from vitkit.data.hf.stream import stream_splits
from vitkit.data.imagefolder import choose_splits
from vitkit.data.sources import DatasetSplits
from vitkit.errors import MissingPathError, UsageError

PREFIX = "hf:"
_HUB_NAME = re.compile(r"[\w][\w.-]*(/[\w][\w.-]*)?")  # NAME or OWNER/NAME, as the Hub spells them
_SPLIT_NAME = re.compile(r"[\w][\w.-]*")


def is_hf_path(path: str) -> bool:
    """Whether a data path names a Hugging Face dataset (`hf:...`)."""
    return path.startswith(PREFIX)


def parse_hf_path(path: str) -> tuple[str, str | None]:
    """`hf:PATH_OR_NAME[:SPLIT]` -> (PATH_OR_NAME, SPLIT or None)."""
    location = path[len(PREFIX) :]
    head, _, tail = location.rpartition(":")
    if head and _SPLIT_NAME.fullmatch(tail):
        return head, tail
    if not location:
        raise UsageError(
            "--data hf: names no dataset; give hf:DIR (saved with save_to_disk, or an imagefolder directory) or "
            "hf:OWNER/NAME (the Hub), optionally followed by :SPLIT"
        )
    return location, None


def load_hf(config: DataConfig) -> DatasetSplits:
    """The train and val sources of `config.path` (`hf:...`); see the module docstring."""
    location, only = parse_hf_path(config.path)
    splits, streaming = open_splits(location, config)
    names = list(splits)
    if only is not None:
        if only not in splits:
            raise UsageError(f"{config.path}: no split '{only}' (it has: {', '.join(names)})")
        splits, chosen = {only: splits[only]}, (only, None)
    else:
        chosen = choose_splits(names, config.train_split, config.val_split, config.path, "split")
        if chosen is None:
            raise UsageError(
                f"{config.path} has no 'train' split (it has: {', '.join(names)}); name the training split with "
                f"--train-split NAME, or read one split with hf:{location}:NAME (held out by val_fraction)"
            )
    train_name, val_name = chosen
    columns = find_columns(splits[train_name].features, config, config.path)
    for name in (val_name,) if val_name else ():
        if splits[name].features != splits[train_name].features:
            raise UsageError(f"{config.path}: splits '{train_name}' and '{name}' have different features")
    where = {name: f"{PREFIX}{location}:{name}" for name in splits}  # how messages name a split (and a row in it)
    if streaming:
        return stream_splits(splits, train_name, val_name, columns, config, where)
    return indexed_splits(splits, train_name, val_name, columns, config, where)


def has_own_split(path: str) -> bool:
    """Whether `hf:...` brings its own held-out split (without :SPLIT, a val/validation/test split beside train)."""
    location, only = parse_hf_path(path)
    if only is not None:
        return False
    names = list(open_splits(location, DataConfig(path=path))[0])
    try:
        chosen = choose_splits(names, None, None, path, "split")
    except UsageError:  # several validation splits: it has its own, the run's --val-split says which
        return True
    return chosen is not None and chosen[1] is not None


def open_splits(location: str, config: DataConfig) -> tuple[dict[str, Any], bool]:
    """{split name: Dataset or IterableDataset} of a saved dataset, an imagefolder directory or a Hub name, and
    whether they stream."""
    datasets = require_datasets()
    path = Path(location).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                return dict(loaded), False
            return {str(loaded.split or "train"): loaded}, False
        try:
            cache = cache_root(config.cache_dir) / "huggingface"
            return dict(datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=str(cache))), False
        except (ValueError, FileNotFoundError) as error:  # no image files, or files it cannot type
            raise UsageError(f"hf:{location}: not a saved dataset, and imagefolder cannot read it: {error}") from None
    looks_local = location.startswith(("/", ".", "~")) or path.exists() or not _HUB_NAME.fullmatch(location)
    if looks_local:
        raise MissingPathError(
            f"hf:{location}: no such directory; give a directory written by save_to_disk, an imagefolder directory "
            "(<split>/<class>/<image>), or a Hub dataset name (hf:OWNER/NAME)"
        )
    # No network, no such dataset (DatasetNotFoundError) or a gated one: OSErrors; a name that needs a config
    # or split the Hub does not have: ValueError. Anything else is a bug and keeps its traceback.
    try:
        return dict(datasets.load_dataset(location, streaming=True)), True
    except (*unreachable_errors(), ValueError) as error:
        raise UsageError(
            f"hf:{location}: no local directory of that name, and the Hugging Face Hub gave no dataset "
            f"({type(error).__name__}: {error})"
        ) from error
