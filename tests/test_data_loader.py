"""Loaders: order is a pure function of (seed, epoch); resuming at start_batch repeats the uninterrupted tail."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from vitkit.data import DataConfig, FileSource, TensorSource, epoch_order, load_dataset, make_loader, num_batches


def tensor_source(n: int = 50, size: int = 4) -> TensorSource:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
    return TensorSource(images, torch.arange(n) % 7, [str(c) for c in range(7)])


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_batches_shapes_and_dtypes():
    loader = make_loader(tensor_source(), 16, shuffle=True, seed=0, epoch=0)
    got = batches(loader)
    assert len(loader) == len(got) == 4 == num_batches(50, 16)
    assert [x.shape[0] for x, _ in got] == [16, 16, 16, 2]
    x, y = got[0]
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 4, 4) and y.dtype == torch.int64
    seen = torch.cat([x[:, 0, 0, 0] for x, _ in got]).long()
    assert sorted(seen.tolist()) == list(range(50))  # every image exactly once
    assert torch.equal(torch.cat([y for _, y in got]), seen % 7)  # labels travel with their images


def test_drop_last():
    loader = make_loader(tensor_source(), 16, shuffle=False, seed=0, epoch=0, drop_last=True)
    assert len(loader) == 3 == num_batches(50, 16, drop_last=True)
    assert [x.shape[0] for x, _ in loader] == [16, 16, 16]


def test_order_depends_only_on_seed_and_epoch():
    assert torch.equal(epoch_order(100, shuffle=True, seed=1, epoch=2), epoch_order(100, shuffle=True, seed=1, epoch=2))
    assert not torch.equal(
        epoch_order(100, shuffle=True, seed=1, epoch=2), epoch_order(100, shuffle=True, seed=1, epoch=3)
    )
    assert not torch.equal(
        epoch_order(100, shuffle=True, seed=1, epoch=2), epoch_order(100, shuffle=True, seed=2, epoch=2)
    )
    assert torch.equal(epoch_order(10, shuffle=False, seed=1, epoch=2), torch.arange(10))
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    epoch_order(100, shuffle=True, seed=5, epoch=0)
    assert torch.equal(torch.rand(1), before)  # the global RNG (augmentation) is left alone


def test_resume_at_start_batch_equals_uninterrupted_tail():
    source = tensor_source(50)
    full = batches(make_loader(source, 8, shuffle=True, seed=3, epoch=1))
    tail = batches(make_loader(source, 8, shuffle=True, seed=3, epoch=1, start_batch=4))
    assert len(make_loader(source, 8, shuffle=True, seed=3, epoch=1, start_batch=4)) == len(full)  # per epoch
    assert len(tail) == len(full) - 4
    for (x1, y1), (x2, y2) in zip(full[4:], tail, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert batches(make_loader(source, 8, shuffle=True, seed=3, epoch=1, start_batch=len(full))) == []
    with pytest.raises(ValueError, match="outside this epoch's 7 batches"):
        make_loader(source, 8, shuffle=True, seed=3, epoch=1, start_batch=8)


def make_files(root: Path, n: int = 12) -> Path:
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"{i:02d}.png")
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_matches_in_memory_and_resumes(tmp_path, workers):
    root = make_files(tmp_path / "data")
    common = {"path": str(root), "cache_dir": str(tmp_path / "cache"), "num_workers": 0, "val_fraction": 0.25}
    memory = load_dataset(DataConfig(**common)).train
    stream = load_dataset(DataConfig(**common, max_memory_gb=1e-9)).train
    assert isinstance(stream, FileSource)
    kwargs = {"shuffle": True, "seed": 7, "epoch": 2, "num_workers": workers}
    expected = batches(make_loader(memory, 3, **kwargs))
    got = batches(make_loader(stream, 3, **kwargs))
    assert len(got) == len(expected) == 3
    for (x1, y1), (x2, y2) in zip(expected, got, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    tail = batches(make_loader(stream, 3, start_batch=1, **kwargs))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(expected[1:], tail, strict=True))


def test_streaming_replaces_a_file_that_breaks_after_indexing(tmp_path):
    root = make_files(tmp_path / "data", 4)
    splits = load_dataset(DataConfig(path=str(root), cache_dir=str(tmp_path / "c"), num_workers=0, max_memory_gb=1e-9))
    broken = Path(splits.train.paths[0])
    broken.write_bytes(broken.read_bytes()[:40])  # truncated after the header was checked
    with pytest.warns(UserWarning, match=f"skipped {broken}"):
        image, label = splits.train[0]
    assert image.shape == (3, 8, 8)
    assert label == int(splits.train.labels[1])  # the next file stands in, label included
