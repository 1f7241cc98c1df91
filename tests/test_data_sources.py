"""Datasets: ImageFolder (both layouts), the decode cache, CIFAR pickles, digits, and the errors users can hit."""

from __future__ import annotations

import inspect
import io
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import DataConfig, FileSource, TensorSource, load_dataset
from vitkit.data import imagefolder as imagefolder_module
from vitkit.data.cifar import read_cifar_pickle
from vitkit.data.sources import ImageSource, concat_sources, epoch_order

CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"  # ../shared beside the repo


def colour_image(path: Path, label: int, index: int, size: tuple[int, int] = (12, 12)) -> None:
    """A small PNG whose red channel encodes the class and green channel the index (so tests can check labels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40 * label, 10 * index, 128)).save(path)


def make_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 12)) -> Path:
    """root/<class>/<i>.png with `classes[name]` images each."""
    for label, (name, count) in enumerate(sorted(classes.items())):
        for i in range(count):
            colour_image(root / name / f"{i:03d}.png", label, i, size)
    return root


def config(path: Path, tmp_path: Path, **overrides) -> DataConfig:
    return DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), num_workers=0, **overrides)


def red_labels(source: TensorSource) -> torch.Tensor:
    """The class each stored image was drawn for (decoded from its red channel)."""
    return torch.round(source.images[:, 0, 6, 6].float() / 40).long()


def test_folder_with_train_and_val(tmp_path):
    make_folder(tmp_path / "data" / "train", {"cat": 5, "dog": 4})
    make_folder(tmp_path / "data" / "val", {"cat": 2, "dog": 3})
    splits = load_dataset(config(tmp_path / "data", tmp_path))
    assert splits.class_names == ["cat", "dog"]
    assert (len(splits.train), len(splits.val)) == (9, 5)
    assert isinstance(splits.train, TensorSource) and splits.image_size == 12  # natural size: all 12x12
    assert splits.train.labels.tolist() == [0] * 5 + [1] * 4
    assert torch.equal(red_labels(splits.train), splits.train.labels)
    assert torch.equal(red_labels(splits.val), splits.val.labels)
    assert splits.skipped == []


def test_folder_without_split_is_split_by_seed_and_class(tmp_path):
    make_folder(tmp_path / "data", {"a": 10, "b": 20, "c": 5})
    first = load_dataset(config(tmp_path / "data", tmp_path, val_fraction=0.2, seed=3))
    again = load_dataset(config(tmp_path / "data", tmp_path, val_fraction=0.2, seed=3))
    other = load_dataset(config(tmp_path / "data", tmp_path, val_fraction=0.2, seed=4))
    assert torch.bincount(first.val.labels).tolist() == [2, 4, 1]  # stratified
    assert len(first.train) + len(first.val) == 35
    assert torch.equal(first.val.images, again.val.images)
    assert not torch.equal(first.val.images, other.val.images)
    assert torch.equal(red_labels(first.val), first.val.labels)
    assert torch.equal(red_labels(first.train), first.train.labels)


def test_mixed_sizes_are_stored_resized_and_centre_cropped(tmp_path):
    colour_image(tmp_path / "d" / "a" / "0.png", 0, 0, (40, 30))
    colour_image(tmp_path / "d" / "a" / "1.png", 0, 1, (30, 50))
    colour_image(tmp_path / "d" / "b" / "0.png", 1, 0, (64, 64))
    colour_image(tmp_path / "d" / "b" / "1.png", 1, 1, (64, 64))
    splits = load_dataset(config(tmp_path / "d", tmp_path, img_size=28, val_fraction=0.5))
    assert splits.image_size == round(28 / 0.875) == 32
    assert splits.train.images.shape[1:] == (3, 32, 32)


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    make_folder(tmp_path / "data", {"a": 6, "b": 6})
    first = load_dataset(config(tmp_path / "data", tmp_path))

    def fail(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(imagefolder_module, "decode_chunk", fail)
    monkeypatch.setattr(imagefolder_module, "_headers_chunk", fail)
    second = load_dataset(config(tmp_path / "data", tmp_path))
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.val.labels, second.val.labels)
    # Changing a file (size / mtime) or a decode setting is a miss: the decode function is called again.
    os.utime(tmp_path / "data" / "a" / "000.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(config(tmp_path / "data", tmp_path))


def test_cache_dir_defaults_to_env(tmp_path, monkeypatch):
    make_folder(tmp_path / "data", {"a": 3, "b": 3})
    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "env-cache"))
    load_dataset(DataConfig(path=str(tmp_path / "data"), num_workers=0))
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "env-cache").iterdir()) == ["images", "index"]


def test_every_bad_file_is_skipped_counted_and_named(tmp_path):
    root = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "text.jpg").write_text("hello")
    (root / "b" / "readme.txt").write_text("not an image extension")
    Image.new("L", (12, 12), 7).save(root / "b" / "grey.png")  # odd modes are fine, not skipped
    Image.new("RGBA", (12, 12), (1, 2, 3, 255)).save(root / "b" / "rgba.png")
    (root / "b" / ".DS_Store").write_bytes(b"\0\0")  # hidden: ignored, not reported
    with pytest.warns(UserWarning, match="skipped 4 unusable file") as caught:
        splits = load_dataset(config(root, tmp_path, val_fraction=0.25))
    message = str(caught[0].message)
    for name in ("truncated.jpg", "empty.jpg", "text.jpg", "readme.txt"):
        assert name in message
    assert sorted(Path(s.path).name for s in splits.skipped) == ["empty.jpg", "readme.txt", "text.jpg", "truncated.jpg"]
    assert len(splits.train) + len(splits.val) == 10


def test_streaming_source_when_over_the_memory_budget(tmp_path):
    make_folder(tmp_path / "data", {"a": 5, "b": 5})
    in_memory = load_dataset(config(tmp_path / "data", tmp_path))
    streamed = load_dataset(config(tmp_path / "data", tmp_path, max_memory_gb=1e-9))
    assert isinstance(streamed.train, FileSource) and not streamed.train.in_memory
    assert torch.equal(streamed.train.labels, in_memory.train.labels)
    for i in range(len(streamed.train)):
        image, label = streamed.train[i]
        assert torch.equal(image, in_memory.train.images[i]) and label == int(in_memory.train.labels[i])


def test_train_fraction_keeps_a_seeded_stratified_share_and_the_whole_val(tmp_path):
    make_folder(tmp_path / "data" / "train", {"a": 20, "b": 10, "c": 30})
    make_folder(tmp_path / "data" / "val", {"a": 3, "b": 3, "c": 3})
    full = load_dataset(config(tmp_path / "data", tmp_path))
    for budget in (4.0, 1e-9):
        tenth = load_dataset(config(tmp_path / "data", tmp_path, train_fraction=0.1, seed=1, max_memory_gb=budget))
        assert torch.bincount(tenth.train.labels).tolist() == [2, 1, 3]
        assert len(tenth.val) == 9 and tenth.class_names == full.class_names
        for index, label in enumerate(tenth.train.labels.tolist()):
            assert int(image_at(tenth.train, index)[0, 6, 6]) == 40 * label  # each image keeps its own label
    first = load_dataset(config(tmp_path / "data", tmp_path, train_fraction=0.1, seed=1))
    again = load_dataset(config(tmp_path / "data", tmp_path, train_fraction=0.1, seed=1))
    other = load_dataset(config(tmp_path / "data", tmp_path, train_fraction=0.1, seed=2))
    assert torch.equal(first.train.images, again.train.images)
    assert not torch.equal(first.train.images, other.train.images)
    with pytest.raises(ValueError, match="train_fraction must be in"):
        config(tmp_path / "data", tmp_path, train_fraction=0.0)


def test_whole_dataset_is_train_then_val_in_memory_or_streamed(tmp_path):
    make_folder(tmp_path / "data", {"a": 5, "b": 5})
    for budget in (4.0, 1e-9):
        splits = load_dataset(config(tmp_path / "data", tmp_path, max_memory_gb=budget))
        whole = splits.whole()
        assert type(whole) is type(splits.train) and len(whole) == 10 and whole.size == splits.image_size
        assert whole.labels.tolist() == splits.train.labels.tolist() + splits.val.labels.tolist()
        for index in range(len(splits.val)):
            assert torch.equal(image_at(whole, len(splits.train) + index), image_at(splits.val, index))


def image_at(source, index: int) -> torch.Tensor:
    """The stored uint8 image `index` of an in-memory or streamed source."""
    return source.images[index] if source.in_memory else source[index][0]


def test_joining_sources_of_different_datasets_is_refused():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="cannot join sources of different classes or sizes"):
        concat_sources(TensorSource(images, torch.zeros(2), ["a"]), TensorSource(images, torch.zeros(2), ["b"]))


def test_every_source_kind_implements_the_source_interface():
    from vitkit.data.hf.indexed import HFSource
    from vitkit.data.hf.stream import HFStreamSource
    from vitkit.data.shards.source import ShardSource

    for kind in (TensorSource, FileSource, ShardSource, HFSource, HFStreamSource):
        assert issubclass(kind, ImageSource) and not inspect.isabstract(kind), kind.__name__
    with pytest.raises(TypeError, match="abstract"):
        ImageSource()  # subset and concat have no default: every kind says how (or why not)


def test_the_interface_defaults_are_what_the_loader_did_without_them(tmp_path):
    images, labels = torch.arange(4 * 3 * 2 * 2, dtype=torch.uint8).reshape(4, 3, 2, 2), torch.tensor([0, 1, 0, 1])
    memory = TensorSource(images, labels, ["a", "b"])
    assert (memory.num_workers, memory.digest, memory.describe(2, 1)) == (0, "", None)
    assert torch.equal(memory.epoch_order(3, 1), epoch_order(4, shuffle=True, seed=3, epoch=1))
    part = memory.subset(torch.tensor([3, 0]))
    assert torch.equal(part.images, images[[3, 0]]) and part.labels.tolist() == [1, 0]
    files = FileSource(["x.png", "y.png"], torch.tensor([0, 1]), ["a", "b"], size=2, num_workers=3)
    batch = files.collate([(images[0], 0), (images[1], 1)])
    assert torch.equal(batch[0], images[:2]) and batch[1].tolist() == [0, 1] and len(batch) == 2
    joined = concat_sources(files, files.subset(torch.tensor([1])))
    assert joined.paths == ["x.png", "y.png", "y.png"] and joined.num_workers == 3
    with pytest.raises(ValueError, match="cannot join a TensorSource and a FileSource; load them the same way"):
        concat_sources(TensorSource(images[:2], labels[:2], ["a", "b"]), files)


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match="has no class sub-folders; an ImageFolder dataset needs one sub-folder"):
        load_dataset(config(tmp_path / "data", tmp_path))


def test_class_without_valid_images_is_a_clear_error(tmp_path):
    make_folder(tmp_path / "data", {"a": 3, "b": 3})
    (tmp_path / "data" / "empty").mkdir()
    (tmp_path / "data" / "broken").mkdir()
    (tmp_path / "data" / "broken" / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="no valid images: .*broken, .*empty .*remove the folders"):
        load_dataset(config(tmp_path / "data", tmp_path))


def test_differing_train_and_val_classes_are_a_clear_error(tmp_path):
    make_folder(tmp_path / "data" / "train", {"cat": 2, "dog": 2, "emu": 2})
    make_folder(tmp_path / "data" / "val", {"cat": 2, "dog": 2, "fox": 2})
    with pytest.raises(ValueError, match=r"only in train: \['emu'\]; only in val: \['fox'\]"):
        load_dataset(config(tmp_path / "data", tmp_path))


def test_train_without_a_held_out_folder_is_a_clear_error(tmp_path):
    make_folder(tmp_path / "data" / "train", {"cat": 2, "dog": 2})
    make_folder(tmp_path / "data" / "holdout", {"cat": 2, "dog": 2})
    with pytest.raises(ValueError, match=r"has a train/ folder but no held-out folder .*--val-split NAME"):
        load_dataset(config(tmp_path / "data", tmp_path))
    splits = load_dataset(config(tmp_path / "data", tmp_path, val_split="holdout"))  # named: used as it is
    assert (len(splits.train), len(splits.val)) == (4, 4)


@pytest.mark.parametrize("held_out", ["valid", "validation", "test"])
def test_the_usual_held_out_names_are_accepted_and_said(tmp_path, held_out, caplog):
    make_folder(tmp_path / "data" / "train", {"cat": 3, "dog": 3})
    make_folder(tmp_path / "data" / held_out, {"cat": 1, "dog": 2})
    caplog.set_level("INFO", logger="vitkit.data")
    splits = load_dataset(config(tmp_path / "data", tmp_path))
    assert (len(splits.train), len(splits.val)) == (6, 3) and splits.val.labels.tolist() == [0, 1, 1]
    assert f"validating on {held_out}/" in caplog.text


def test_a_validation_folder_is_preferred_over_test_and_the_log_says_test_is_left_out(tmp_path, caplog):
    make_folder(tmp_path / "data" / "train", {"cat": 3, "dog": 3})
    make_folder(tmp_path / "data" / "valid", {"cat": 2, "dog": 2})  # a Roboflow export: train/ valid/ test/
    make_folder(tmp_path / "data" / "test", {"cat": 1, "dog": 1})
    caplog.set_level("INFO", logger="vitkit.data")
    assert len(load_dataset(config(tmp_path / "data", tmp_path)).val) == 4
    assert "validating on valid/" in caplog.text and "(test/ is left out)" in caplog.text
    assert len(load_dataset(config(tmp_path / "data", tmp_path, val_split="test")).val) == 2


def test_two_validation_folders_are_ambiguous(tmp_path):
    for name in ("train", "val", "valid"):
        make_folder(tmp_path / "data" / name, {"cat": 2, "dog": 2})
    with pytest.raises(ValueError, match=r"several held-out folders \(val/, valid/\); .*--val-split NAME"):
        load_dataset(config(tmp_path / "data", tmp_path))


def test_named_splits_that_do_not_exist_are_a_clear_error(tmp_path):
    make_folder(tmp_path / "data" / "training", {"cat": 2, "dog": 2})
    make_folder(tmp_path / "data" / "val", {"cat": 2, "dog": 2})
    with pytest.raises(ValueError, match=r"--val-split dev: .* has no folder dev/ \(it has: training, val\)"):
        load_dataset(config(tmp_path / "data", tmp_path, train_split="training", val_split="dev"))
    with pytest.raises(ValueError, match=r"--train-split train: .* has no folder train/"):
        load_dataset(config(tmp_path / "data", tmp_path, train_split="train"))
    splits = load_dataset(config(tmp_path / "data", tmp_path, train_split="training"))
    assert (len(splits.train), len(splits.val)) == (4, 4)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(config(tmp_path / "nowhere", tmp_path))


# --- CIFAR in the official python-pickle format ----------------------------------------------------------------


def cifar_batch(n: int, num_classes: int, seed: int, label_key: bytes) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    labels = [i % num_classes for i in range(n)]
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    data[:, 0] = labels  # first red pixel = label, so tests can check rows and labels stay together
    batch = {b"batch_label": b"generated", label_key: labels, b"data": data}
    batch[b"filenames"] = [f"img_{i}.png".encode() for i in range(n)]
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [label // 5 for label in labels]
    return batch


def write_cifar10(folder: Path) -> Path:
    """A tiny cifar-10-batches-py folder: 5 train batches of 20 images, a test batch of 10, the meta file."""
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(20, 10, i, b"labels"), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(10, 10, 0, b"labels"), protocol=2))
    names = [
        n.encode() for n in (["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    ]
    meta = {b"label_names": names, b"num_cases_per_batch": 20, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def write_cifar100(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(pickle.dumps(cifar_batch(300, 100, 1, b"fine_labels"), protocol=2))
    (folder / "test").write_bytes(pickle.dumps(cifar_batch(100, 100, 2, b"fine_labels"), protocol=2))
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": [b"x"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def tar_gz(folder: Path) -> Path:
    archive = folder.parent / f"{folder.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def check_cifar(splits, num_classes: int, n_train: int, n_val: int) -> None:
    assert len(splits.class_names) == num_classes
    assert (len(splits.train), len(splits.val)) == (n_train, n_val)
    assert splits.train.images.shape == (n_train, 3, 32, 32) and splits.train.images.dtype == torch.uint8
    assert splits.image_size == 32
    for source in (splits.train, splits.val):
        assert torch.equal(source.images[:, 0, 0, 0].long(), source.labels)  # planes in R, G, B order


def test_cifar10_folder_parent_and_tar_gz(tmp_path):
    folder = write_cifar10(tmp_path / "cifar-10-batches-py")
    for path in (folder, tmp_path, tar_gz(folder)):
        splits = load_dataset(DataConfig(path=str(path)))
        check_cifar(splits, 10, 100, 10)
        assert splits.class_names[0] == "airplane" and splits.class_names[-1] == "truck"


def test_cifar100_uses_fine_labels(tmp_path):
    folder = write_cifar100(tmp_path / "cifar-100-python")
    for path in (folder, tar_gz(folder)):
        splits = load_dataset(DataConfig(path=str(path)))
        check_cifar(splits, 100, 300, 100)
        assert splits.class_names[99] == "c99"
    assert (
        torch.bincount(load_dataset(DataConfig(path=str(folder), limit_per_class=2)).train.labels).tolist() == [2] * 100
    )


def test_cifar_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo should never run",))

    payload = pickle.dumps({b"data": Evil()}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="never needs"):
        read_cifar_pickle(payload)
    assert read_cifar_pickle(pickle.dumps({b"x": np.arange(3, dtype=np.uint8)}, protocol=2))[b"x"].tolist() == [0, 1, 2]
    assert read_cifar_pickle(io.BytesIO(pickle.dumps([1, "a"], protocol=4)).read()) == [1, "a"]


# --- digits and the real CIFAR-10 folder --------------------------------------------------------------------------


def test_digits():
    splits = load_dataset(DataConfig(path="digits", img_size=16, val_fraction=0.1, seed=0))
    assert len(splits.train) + len(splits.val) == 1797
    assert splits.class_names == [str(d) for d in range(10)]
    assert splits.train.images.shape[1:] == (3, 16, 16) and splits.train.images.dtype == torch.uint8
    assert splits.train.images.max() == 255 and splits.train.images.min() == 0
    assert torch.equal(splits.train.images[:, 0], splits.train.images[:, 1])  # grey as RGB
    assert torch.bincount(splits.val.labels).min() >= 15  # every class held out (stratified)
    again = load_dataset(DataConfig(path="digits", img_size=16, val_fraction=0.1, seed=0))
    assert torch.equal(again.val.images, splits.val.images)


@pytest.mark.skipif(not CIFAR10.is_dir(), reason="real CIFAR-10 folder not present")
def test_real_cifar10_folder(tmp_path):
    start = time.perf_counter()
    splits = load_dataset(DataConfig(path=str(CIFAR10), limit_per_class=20, cache_dir=str(tmp_path), num_workers=0))
    assert time.perf_counter() - start < 30
    assert splits.class_names[:3] == ["airplane", "automobile", "bird"] and splits.num_classes == 10
    assert (len(splits.train), len(splits.val)) == (200, 200)
    assert splits.image_size == 32 and splits.skipped == []
    assert torch.bincount(splits.train.labels).tolist() == [20] * 10
    assert 60 < splits.train.images.float().mean() < 190  # real photos, not blank
