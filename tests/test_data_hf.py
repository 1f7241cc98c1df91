"""Hugging Face datasets as a source (`--data hf:...`): saved datasets and imagefolder directories read like folders
(classes, pixels, order, resume, bad rows), a stream read in order and resumed at its offset, training and resuming
a run on `hf:`, and the errors users can hit."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()

from test_data_shards import CLASSES, id_image, ids_of  # noqa: E402
from test_data_shards_distributed import ARGS, environment, max_difference  # noqa: E402
from vitkit.cli.main import main  # noqa: E402
from vitkit.data import DataConfig, TensorSource, load_dataset, make_loader  # noqa: E402
from vitkit.data.hf import HFSource, HFStreamSource, parse_hf_path  # noqa: E402
from vitkit.data.imagefolder import decode_chunk  # noqa: E402
from vitkit.data.loader import eval_loader  # noqa: E402
from vitkit.errors import MissingPathError, UsageError  # noqa: E402


def encoded(image: Image.Image, kind: str = "PNG") -> dict:
    buffer = io.BytesIO()
    image.save(buffer, kind)
    return {"bytes": buffer.getvalue(), "path": None}


def saved(root: Path, splits: dict[str, int], label_feature=None, **columns) -> Path:
    """A DatasetDict saved to `root`: per split `count` images per class of CLASSES, numbered 0.. (train first)."""
    label_feature = label_feature or datasets.ClassLabel(names=list(CLASSES))
    features = datasets.Features({"image": datasets.Image(), "label": label_feature, **columns})
    number, parts = 0, {}
    for split, count in splits.items():
        rows = {"image": [], "label": []}
        for label in range(len(CLASSES)):
            for _ in range(count):
                rows["image"].append(encoded(id_image(number)))
                rows["label"].append(label)
                number += 1
        extra = {name: [0] * len(rows["label"]) for name in columns}
        parts[split] = datasets.Dataset.from_dict({**rows, **extra}, features=features)
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return root


def load(path: str | Path, **overrides):
    path = str(path) if str(path).startswith("hf:") else f"hf:{path}"
    return load_dataset(DataConfig(path=path, **{"img_size": 8, "num_workers": 2, **overrides}))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 train rows (20 per class), 15 rows in a split named validation."""
    return saved(tmp_path_factory.mktemp("hf") / "saved", {"train": 20, "validation": 5})


def test_a_saved_dataset_gives_its_classes_splits_and_labels(dataset: Path) -> None:
    streamed, in_memory = load(dataset, max_memory_gb=0), load(dataset)
    for splits in (streamed, in_memory):
        assert splits.class_names == list(CLASSES) and (len(splits.train), len(splits.val)) == (60, 15)
        images, labels = next(iter(make_loader(splits.val, 15, shuffle=False, seed=0, epoch=0)))
        assert ids_of(images) == list(range(60, 75)) and labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert isinstance(streamed.train, HFSource) and isinstance(in_memory.train, TensorSource)
    assert streamed.image_size == in_memory.image_size == 8
    one = load(f"hf:{dataset}:train")  # one split, held out by val_fraction as a folder without split folders
    assert (len(one.train), len(one.val)) == (54, 6)
    assert len(load(dataset, limit_per_class=3).train) == 9 and len(load(dataset, train_fraction=0.5).train) == 30
    assert parse_hf_path("hf:user/name:test") == ("user/name", "test") and parse_hf_path("hf:a/b") == ("a/b", None)


def test_pixels_equal_the_folder_sources_and_imagefolder_is_read_too(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    files = []
    for name, colour in (("a", 40), ("b", 200)):
        (root / name).mkdir(parents=True)
        for i, size in enumerate([(30, 20), (20, 34), (25, 25)]):
            array = (np.arange(size[0] * size[1] * 3).reshape(size[1], size[0], 3) * (i + 1) + colour) % 256
            Image.fromarray(array.astype(np.uint8)).save(root / name / f"{i}.jpg", quality=80)
            files.append((root / name / f"{i}.jpg", name))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    rows = {"image": [{"bytes": p.read_bytes(), "path": None} for p, _ in files], "label": [n for _, n in files]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "saved"))
    folder = load_dataset(DataConfig(path=str(root), img_size=16, num_workers=0))
    for path, memory in ((tmp_path / "saved", 0), (tmp_path / "saved", 4), (root, 0)):  # saved, imagefolder
        whole = load(path, img_size=16, num_workers=0, max_memory_gb=memory).whole()
        assert whole.size == folder.image_size == 18 and whole.class_names == ["a", "b"]
        images, labels = next(iter(make_loader(whole, len(whole), shuffle=False, seed=0, epoch=0)))
        order = sorted(range(len(files)), key=lambda i: int(labels[i]))  # both read a, then b
        for row, (file, name) in zip(order, files, strict=True):
            assert torch.equal(images[row], decode_chunk([str(file)], 18)[0][0]), file
            assert whole.class_names[int(labels[row])] == name


def test_every_row_once_per_epoch_and_a_resumed_epoch_continues_it(dataset: Path) -> None:
    train = load(dataset, max_memory_gb=0).train
    whole = ids_of(torch.cat([x for x, _ in make_loader(train, 12, shuffle=True, seed=3, epoch=1, drop_last=True)]))
    assert sorted(whole) == list(range(60))
    rest = make_loader(train, 12, shuffle=True, seed=3, epoch=1, start_batch=2, drop_last=True, num_workers=2)
    assert ids_of(torch.cat([x for x, _ in rest])) == whole[24:]
    later = ids_of(torch.cat([x for x, _ in make_loader(train, 12, shuffle=True, seed=3, epoch=2, drop_last=True)]))
    assert later != whole


def test_bad_rows_are_replaced_counted_and_reported(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encoded(Image.fromarray(noise), "JPEG")["bytes"]
    images = [encoded(id_image(i)) for i in range(6)]
    images[2] = {"bytes": b"not an image", "path": None}  # refused at the header: left out
    images[4] = {"bytes": data[: len(data) // 2], "path": None}  # header fine, body truncated: replaced when read
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1, 0, 1]}, features=features).save_to_disk(
        str(tmp_path / "bad")
    )
    with pytest.warns(UserWarning, match=r"skipped 2 unusable file\(s\): .*train\[2\] \(not an image.*train\[4\]"):
        in_memory = load(tmp_path / "bad", val_fraction=0.4)  # the truncated body found when decoding once
    assert len(in_memory.train) + len(in_memory.val) == 4
    with pytest.warns(UserWarning, match=r"skipped 1 unusable file\(s\): .*train\[2\] \(not an image"):
        splits = load(tmp_path / "bad", val_fraction=0.4, max_memory_gb=0)
    assert splits.class_names == ["0", "1"] and len(splits.train) + len(splits.val) == 5
    assert [s.path for s in splits.skipped] == [f"hf:{tmp_path / 'bad'}:train[2]"]
    whole = splits.whole()
    with pytest.warns(UserWarning, match=r"train\[4\]"):
        images, _ = next(iter(make_loader(whole, 5, shuffle=False, seed=0, epoch=0, num_workers=0)))
    assert len(images) == 5 and any("truncated" in s.reason for s in splits.skipped)


def test_a_stream_is_read_in_its_epoch_order_and_resumes_at_its_offset(dataset: Path) -> None:
    base = datasets.load_from_disk(str(dataset))
    streams = {n: base[n].to_iterable_dataset(num_shards=3) for n in base}  # what load_dataset(streaming=True) gives
    train, val = (
        HFStreamSource(streams[n], len(base[n]), CLASSES, 8, name=n, image_column="image", label_column="label")
        for n in ("train", "validation")
    )
    first = [make_loader(train, 12, shuffle=True, seed=4, epoch=e, drop_last=True, num_workers=2) for e in (0, 1)]
    epochs = [ids_of(torch.cat([x for x, _ in loader])) for loader in first]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(60)) and epochs[0] != epochs[1]
    rest = make_loader(train, 12, shuffle=True, seed=4, epoch=1, start_batch=3, drop_last=True, num_workers=2)
    assert ids_of(torch.cat([x for x, _ in rest])) == epochs[1][36:]
    shares = [eval_loader(val, 4, rank=r, world_size=2) for r in range(2)]  # 8 rows per rank, the last one padded
    seen = [ids_of(torch.cat([x for x, _ in loader]))[:real] for loader, real in shares]
    assert seen[0] + seen[1] == list(range(60, 75))
    with pytest.raises(UsageError, match="cannot be subset"):
        train.subset(torch.arange(3))


@pytest.mark.slow
def test_training_on_hf_resumes_as_if_never_interrupted(dataset: Path, tmp_path: Path) -> None:
    def train(out: Path, **env: str) -> subprocess.CompletedProcess:
        argv = [
            sys.executable,
            "-m",
            "vitkit",
            "train",
            "--data",
            f"hf:{dataset}",
            "--max-memory-gb",
            "0",
            *ARGS,
            "--out",
            str(out),
        ]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=environment(tmp_path, **env))

    straight, out = tmp_path / "straight", tmp_path / "killed"
    done = train(straight)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hf: 60 rows of" in done.stdout
    killed = train(out, SHARDS_TEST_DIE_AFTER="7")
    assert killed.returncode == 17, killed.stderr[-3000:]
    state = torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=True)
    assert state["progress"]["step"] == 6 and state["progress"]["batch"] == 1  # one batch into the second epoch
    resumed = subprocess.run(
        [sys.executable, "-m", "vitkit", "train", "--resume", str(out)], capture_output=True, text=True,
        timeout=300, env=environment(tmp_path),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert max_difference(straight, out) == 0.0
    assert main(["eval", str(straight / "checkpoints" / "last"), "--data", f"hf:{dataset}", "--batch-size", "16"]) == 0


def test_errors_say_what_to_do(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no split 'test' \(it has: train, validation\)"):
        load(f"hf:{dataset}:test")
    with pytest.raises(MissingPathError, match="no such directory; give a directory written by save_to_disk"):
        load(tmp_path / "nowhere")
    with pytest.raises(UsageError, match=r"--val-split valid: .* has no split 'valid' \(it has: train, validation\)"):
        load(dataset, val_split="valid")
    with pytest.raises(UsageError, match="several held-out splits"):
        load(saved(tmp_path / "two", {"train": 1, "val": 1, "validation": 1}))
    with pytest.raises(UsageError, match="has no 'train' split"):
        load(saved(tmp_path / "notrain", {"fit": 1, "val": 1}))
    rows = {"a": [encoded(id_image(0))], "b": [encoded(id_image(1))], "label": [0]}
    two = datasets.Features({"a": datasets.Image(), "b": datasets.Image(), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict(rows, features=two).save_to_disk(str(tmp_path / "ambiguous"))
    with pytest.raises(UsageError, match=r"several Image columns \(a, b\).*--image-column NAME"):
        load(tmp_path / "ambiguous")
    assert len(load(tmp_path / "ambiguous", image_column="b", val_fraction=0.5).train) == 1
    datasets.Dataset.from_dict({"text": ["x"], "label": [0]}).save_to_disk(str(tmp_path / "text"))
    with pytest.raises(UsageError, match=r"no Image column; its columns: text \(Value\)"):
        load(tmp_path / "text")
    named = saved(tmp_path / "named", {"train": 2}, species=datasets.Value("string"))
    with pytest.raises(UsageError, match="label column 'species' is .*neither a ClassLabel nor an int; encode it"):
        load(named, label_column="species")
    with pytest.raises(UsageError, match="--label-column kind: .* has no such column"):
        load(named, label_column="kind")


def test_a_hub_name_is_streamed(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = datasets.load_from_disk(str(dataset))

    def hub(name: str, streaming: bool = False) -> datasets.IterableDatasetDict:  # what the Hub would give
        assert name == "owner/name" and streaming
        streams = {}
        for split, part in base.items():
            streams[split] = part.to_iterable_dataset(num_shards=2)
            streams[split].info.splits = datasets.SplitDict()
            streams[split].info.splits.add(datasets.SplitInfo(name=split, num_examples=len(part)))
        return datasets.IterableDatasetDict(streams)

    monkeypatch.setattr(datasets, "load_dataset", hub)
    splits = load("hf:owner/name", num_workers=0)
    assert isinstance(splits.train, HFStreamSource) and splits.class_names == list(CLASSES)
    assert (len(splits.train), len(splits.val), splits.image_size) == (60, 15, 8)
    images, labels = next(iter(make_loader(splits.val, 15, shuffle=False, seed=0, epoch=0)))
    assert ids_of(images) == list(range(60, 75)) and labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    with pytest.raises(UsageError, match="streamed, so it needs a held-out split of its own"):
        load("hf:owner/name:train")


def test_a_hub_that_gives_no_dataset_is_a_usage_error_with_its_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str, streaming: bool = False) -> None:
        raise datasets.exceptions.DatasetNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(UsageError, match=r"hf:owner/none: no local directory .*DatasetNotFoundError") as caught:
        load("hf:owner/none")
    assert isinstance(caught.value.__cause__, datasets.exceptions.DatasetNotFoundError)

    def broken(name: str, streaming: bool = False) -> None:
        raise TypeError("load_dataset() got an unexpected keyword argument")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(TypeError, match="unexpected keyword"):  # a bug is not reported as a missing dataset
        load("hf:owner/none")
