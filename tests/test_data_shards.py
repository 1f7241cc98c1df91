"""Packed shards: pack and verify, the (seed, epoch) order over shard windows, reading and decoding as a folder
does, every sample once per epoch over ranks and workers, bad samples and truncated shards, exact resume."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_data_sources import write_cifar10
from vitkit.cli.main import main
from vitkit.data import DataConfig, load_dataset, make_loader
from vitkit.data.imagefolder import decode_chunk
from vitkit.data.loader import rank_rows
from vitkit.data.shards.format import INDEX_FILE, parse_size, read_index
from vitkit.data.shards.order import window_order
from vitkit.data.shards.pack import pack
from vitkit.data.shards.source import ShardSource
from vitkit.data.shards.verify import verify
from vitkit.errors import UsageError

CLASSES = ("ant", "bee", "cat")


def id_image(number: int, size: tuple[int, int] = (8, 8)) -> Image.Image:
    """A PNG-safe image whose pixels spell its number (red = low byte, green = high byte)."""
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[..., 0], array[..., 1], array[..., 2] = number % 256, number // 256, 200
    return Image.fromarray(array)


def ids_of(images: torch.Tensor) -> list[int]:
    """The numbers `id_image` wrote into a batch of decoded images."""
    return (images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).tolist()


def make_folder(root: Path, per_class: dict[str, int]) -> Path:
    """root/{train,val}/<class>/<n>.png, numbered 0.. over the whole folder (train first)."""
    number = 0
    for split, count in per_class.items():
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                id_image(number).save(folder / f"{i:03d}.png")
                number += 1
    return root


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 train images (20 per class) in 5 shards of 12 (a count 2 ranks x 2 workers do not divide), 15 val."""
    root = make_folder(tmp_path_factory.mktemp("folder"), {"train": 20, "val": 5})
    out = tmp_path_factory.mktemp("shards") / "packed"
    member = (root / "train" / "ant" / "000.png").stat().st_size
    pack(root, out, shard_size=member * 12 - 1)  # a new shard once 12 samples' bytes are written
    return out


def splits_of(path: Path, **overrides):
    return load_dataset(DataConfig(path=str(path), img_size=8, num_workers=2, **overrides))


def test_pack_writes_shards_and_an_index_that_verify_accepts(packed: Path) -> None:
    index, tables, _ = read_index(str(packed))
    assert index.class_names == list(CLASSES)
    assert [s.samples for s in index.splits["train"].shards] == [12] * 5 and index.splits["val"].samples == 15
    assert sorted(p.name for p in packed.glob("*.tar"))[:2] == ["train-000000.tar", "train-000001.tar"]
    assert index.source["kind"] == "imagefolder" and index.source["seed"] == 0
    # The training split is shuffled once, so a shard mixes the classes; val keeps the folder's order.
    assert len(set(tables["train"]["label"][:12].tolist())) == 3
    assert tables["val"]["path"][0] == "val/ant/000.png"
    report = verify(str(packed), decode=True)
    assert report.ok and report.samples == {"train": 60, "val": 15} and not report.undecodable


def test_webdataset_reads_the_shards(packed: Path) -> None:
    import webdataset as wds

    dataset = wds.WebDataset(str(packed / "val-000000.tar"), shardshuffle=False).decode("pil").to_tuple("png", "cls")
    first = next(iter(dataset))
    assert first[0].size == (8, 8) and first[1] == 0


def test_the_order_is_a_function_of_seed_and_epoch_over_shard_windows() -> None:
    shard_of = np.repeat(np.arange(7), 10)
    order = window_order(shard_of, seed=3, epoch=1, window=2)
    assert sorted(order.tolist()) == list(range(70))
    assert torch.equal(order, window_order(shard_of, seed=3, epoch=1, window=2))
    assert not torch.equal(order, window_order(shard_of, seed=3, epoch=2, window=2))
    assert not torch.equal(order, window_order(shard_of, seed=4, epoch=1, window=2))
    touched = [set(shard_of[order[i : i + 20].numpy()].tolist()) for i in range(0, 60, 20)]
    assert all(len(shards) == 2 for shards in touched)  # each window reads exactly its 2 shards
    assert not torch.equal(order[:20].sort().values, order[:20])  # and shuffles inside them


def test_samples_decode_to_the_pixels_the_folder_gives(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for name, colour in (("a", 40), ("b", 200)):
        (root / name).mkdir(parents=True)
        for i, size in enumerate([(30, 20), (20, 34), (25, 25)]):
            array = (np.arange(size[0] * size[1] * 3).reshape(size[1], size[0], 3) * (i + 1) + colour) % 256
            Image.fromarray(array.astype(np.uint8)).save(root / name / f"{i}.jpg", quality=80)
    pack(root, tmp_path / "shards", splits=["train"])
    folder = load_dataset(DataConfig(path=str(root), img_size=16, num_workers=0))
    shards = load_dataset(DataConfig(path=str(tmp_path / "shards"), img_size=16, num_workers=0)).whole()
    assert shards.size == folder.image_size == 18  # round(16 / 0.875), chosen from the sizes as for the folder
    images, labels = next(iter(make_loader(shards, len(shards), shuffle=False, seed=0, epoch=0)))
    for row, path in enumerate(shards.table["path"].tolist()):
        expected, _ = decode_chunk([str(root / path)], 18)  # what the folder source stores for this file
        assert torch.equal(images[row], expected[0]), path
        assert int(labels[row]) == ["a", "b"].index(Path(path).parts[0])


def test_every_sample_once_per_epoch_over_ranks_and_workers(packed: Path) -> None:
    train = splits_of(packed).train
    whole = ids_of(torch.cat([x for x, _ in make_loader(train, 12, shuffle=True, seed=0, epoch=0, drop_last=True)]))
    assert sorted(whole) == list(range(60))
    shares = []
    for rank in range(3):  # 5 shards over 3 ranks x 2 workers
        batches = [ids_of(x) for x, _ in make_loader(
            train, 12, shuffle=True, seed=0, epoch=0, drop_last=True, rank=rank, world_size=3, num_workers=2
        )]  # fmt: skip
        assert len(batches) == 5 and all(len(b) == 4 for b in batches)
        shares.append(batches)
    interleaved = [i for b in range(5) for rank in range(3) for i in shares[rank][b]]
    assert interleaved == whole  # the global sequence of one process
    later = ids_of(torch.cat([x for x, _ in make_loader(train, 12, shuffle=True, seed=0, epoch=1, drop_last=True)]))
    assert sorted(later) == list(range(60)) and later != whole


def test_a_remainder_is_dropped_and_said(packed: Path) -> None:
    train = splits_of(packed).train
    seen = ids_of(torch.cat([x for x, _ in make_loader(train, 16, shuffle=True, seed=0, epoch=0, drop_last=True)]))
    assert len(seen) == 48 and len(set(seen)) == 48
    assert "the last 12 samples of each epoch's order are dropped" in train.describe(16, 2)


def test_resuming_at_a_batch_on_another_world_size_keeps_the_sequence(packed: Path) -> None:
    train = splits_of(packed).train
    whole = ids_of(torch.cat([x for x, _ in make_loader(train, 12, shuffle=True, seed=5, epoch=2, drop_last=True)]))
    first = [make_loader(train, 12, shuffle=True, seed=5, epoch=2, drop_last=True, rank=r, world_size=2)
             for r in range(2)]  # fmt: skip
    head = [ids_of(x) for loader in first for x, _ in list(loader)[:2]]  # 2 batches on 2 ranks...
    rest = [
        ids_of(x)
        for r in range(4)
        for x, _ in list(
            make_loader(train, 12, shuffle=True, seed=5, epoch=2, start_batch=2, drop_last=True, rank=r, world_size=4)
        )
    ]  # fmt: skip  ...then the rest on 4
    sequence = head[0] + head[2] + head[1] + head[3]
    sequence += [i for b in range(3) for r in range(4) for i in rest[r * 3 + b]]
    assert sequence == whole


def test_distributed_evaluation_rows_cover_every_image_once() -> None:
    for n, world in ((15, 2), (15, 4), (3, 4), (16, 4)):
        parts = [rank_rows(n, rank, world) for rank in range(world)]
        assert len({len(rows) for rows, _ in parts}) == 1  # the same number of batches on every rank
        real = [i for rows, count in parts for i in rows[:count].tolist()]
        assert real == list(range(n))


def test_a_truncated_shard_is_an_error_naming_it(packed: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in packed.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    shard = copy / "train-000003.tar"
    shard.write_bytes(shard.read_bytes()[:-3000])
    with pytest.raises(UsageError, match=r"shard .*train-000003.tar is truncated"):
        splits_of(copy)
    report = verify(str(copy))
    assert not report.ok and any("train-000003.tar: truncated" in p for p in report.problems)
    assert main(["data", "verify", str(copy)]) == 1
    # Truncated after loading (the size check passed): the read names the shard too.
    source = splits_of(packed).train
    source.shards = [s if s.name != "train-000003.tar" else s for s in source.shards]
    source.root = str(copy)
    with pytest.raises(UsageError, match=r"train-000003.tar is truncated"):
        source.read(np.flatnonzero(source.table["shard"] == 3)[-1:].tolist())


def test_a_changed_shard_fails_verify(packed: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in packed.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    data = bytearray((copy / "val-000000.tar").read_bytes())
    data[600] ^= 0xFF  # inside the first member's bytes
    (copy / "val-000000.tar").write_bytes(bytes(data))
    report = verify(str(copy))
    assert any("sha256 differs" in p for p in report.problems)


def test_bad_samples_are_replaced_counted_and_reported(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "folder", {"train": 4, "val": 2})
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "train" / "bee" / "bad.jpg", quality=90)
    data = (root / "train" / "bee" / "bad.jpg").read_bytes()
    (root / "train" / "bee" / "bad.jpg").write_bytes(data[: len(data) // 2])  # header fine, body truncated
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    pack(root, tmp_path / "shards")
    report = verify(str(tmp_path / "shards"), decode=True)
    assert report.ok and len(report.undecodable) == 1 and "bee/bad.jpg" in report.undecodable[0]
    splits = splits_of(tmp_path / "shards")
    assert [s.reason for s in splits.skipped] == ["not an image file extension"]  # left out when packing
    assert len(splits.train) == 13
    with pytest.warns(UserWarning, match="bee/bad.jpg"):
        images, _ = next(iter(make_loader(splits.train, 13, shuffle=True, seed=0, epoch=0, drop_last=True)))
    assert len(images) == 13  # the bad sample replaced by the next one: the batch keeps its shape
    assert any("bee/bad.jpg" in s.path and "truncated" in s.reason for s in splits.skipped)


def test_cifar_files_are_packed_as_lossless_png(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path / "cifar-10-batches-py")
    assert main(["data", "pack", str(folder), "--out", str(tmp_path / "shards"), "--shard-size", "20kB"]) == 0
    original = load_dataset(DataConfig(path=str(folder), img_size=32))
    shards = load_dataset(DataConfig(path=str(tmp_path / "shards"), img_size=32, num_workers=0))
    assert shards.class_names == original.class_names and len(shards.train) == 100 and len(shards.val) == 10
    images, labels = next(iter(make_loader(shards.val, 10, shuffle=False, seed=0, epoch=0)))
    assert torch.equal(images, original.val.images) and torch.equal(labels, original.val.labels)
    assert read_index(str(tmp_path / "shards"))[0].source["kind"] == "cifar10"
    assert main(["data", "verify", str(tmp_path / "shards")]) == 0


def test_a_folder_without_val_is_split_when_packed_or_when_loaded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "folder", {"train": 10})
    pack(root / "train", tmp_path / "both", val_fraction=0.2)
    pack(root / "train", tmp_path / "whole", splits=["train"])
    both, whole = splits_of(tmp_path / "both"), splits_of(tmp_path / "whole", val_fraction=0.2)
    assert (len(both.train), len(both.val)) == (24, 6) == (len(whole.train), len(whole.val))
    assert len(splits_of(tmp_path / "both", limit_per_class=3).train) == 9


def test_index_errors_say_what_to_do(tmp_path: Path, packed: Path) -> None:
    assert parse_size("512MB") == 512 * 10**6 and parse_size("1GiB") == 2**30 and parse_size("100") == 100
    with pytest.raises(UsageError, match="cannot read the size"):
        parse_size("lots")
    (tmp_path / INDEX_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(UsageError, match="not a vitkit shard index"):
        load_dataset(DataConfig(path=str(tmp_path)))
    with pytest.raises(UsageError, match="exists and is not empty"):
        pack(tmp_path, packed)
    source = splits_of(packed).train
    assert isinstance(source, ShardSource) and pickle.loads(pickle.dumps(source)).digest == source.digest
