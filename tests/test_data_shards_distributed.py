"""Packed shards under real torchrun (gloo ranks on the CPU): every sample once per epoch over ranks and workers,
equal batches per rank, the one-process sequence on any world size; training on 2 ranks equals 1 process with
each val image counted once; a killed run resumes exactly (bit for bit on one process, to fp32 rounding across
ranks), also on another world size."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitkit
from test_data_shards import make_folder, pack
from test_training_world_size import free_port

TESTS = Path(__file__).resolve().parent
TOLERANCE = 1e-6  # the rounding of the gradient all-reduce (3e-8 measured on folders, tests/test_training_world_size)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 train images in 5 shards of 12 (3 ranks x 2 workers do not divide 5), 15 val images in 2 shards."""
    root = make_folder(tmp_path_factory.mktemp("folder"), {"train": 20, "val": 5})
    out = tmp_path_factory.mktemp("packed") / "shards"
    member = (root / "train" / "ant" / "000.png").stat().st_size
    pack(root, out, shard_size=member * 12 - 1)
    return out


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "VITKIT_CACHE": str(tmp / "cache"), "PYTHONPATH": path, **extra}


def torchrun(nproc: int, argv: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", *argv,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment(tmp, **env))


def rank_batches(shards: Path, out: Path, nproc: int, *, epoch: int = 0, start: int = 0) -> list[list[list[int]]]:
    out.mkdir()
    argv = [str(TESTS / "shard_helpers.py"), str(shards), str(out), "12", "7", str(epoch), str(start), "2"]
    done = torchrun(nproc, argv, out)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text())["batches"] for r in range(nproc)]


def one_process_sequence(shards: Path, epoch: int) -> list[int]:
    from vitkit.data import DataConfig, load_dataset, make_loader

    train = load_dataset(DataConfig(path=str(shards), img_size=8, num_workers=0)).train
    loader = make_loader(train, 12, shuffle=True, seed=7, epoch=epoch, drop_last=True)
    return [int(x[i, 0, 0, 0]) + 256 * int(x[i, 1, 0, 0]) for x, _ in loader for i in range(len(x))]


@pytest.mark.slow
def test_every_sample_once_over_ranks_and_workers_and_any_world_size(shards: Path, tmp_path: Path) -> None:
    expected = one_process_sequence(shards, epoch=1)
    assert sorted(expected) == list(range(60))
    three = rank_batches(shards, tmp_path / "three", 3, epoch=1)  # 3 ranks x 2 workers over 5 shards
    assert [len(batches) for batches in three] == [5, 5, 5] and all(len(b) == 4 for r in three for b in r)
    assert [i for b in range(5) for r in range(3) for i in three[r][b]] == expected
    # Stopped after 2 batches on 3 ranks, continued on 4 (and on 2): the global sequence is the same.
    for nproc in (4, 2):
        rest = rank_batches(shards, tmp_path / f"rest{nproc}", nproc, epoch=1, start=2)
        sequence = [i for b in range(2) for r in range(3) for i in three[r][b]]
        sequence += [i for b in range(3) for r in range(nproc) for i in rest[r][b]]
        assert sequence == expected, nproc


# The default (DeiT) augmentation; 5 steps per epoch, a checkpoint every 3 steps.
ARGS = [
    "--img-size", "8", "--model", "mu/4", "--hidden-dim", "16", "--depth", "1", "--num-heads", "2",
    "--mlp-dim", "32", "--batch-size", "12", "--epochs", "2", "--save-every", "3", "--precision", "fp32",
    "--threads", "1", "--attention", "math", "--warmup-steps", "1", "--optimizer", "sgd", "--lr", "0.05",
    "--num-workers", "2", "--no-progress", "--objective", "shard_helpers:DyingSupervised",
    "--crop", "rrc", "--hflip", "--randaugment-n", "2", "--mixup", "0.8", "--cutmix", "1.0",
    "--random-erasing", "0.25", "--label-smoothing", "0.1",
]  # fmt: skip


def train_args(shards: Path, out: Path) -> list[str]:
    return ["-m", "vitkit", "train", "--data", str(shards), *ARGS, "--out", str(out)]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return vitkit.load(run / "checkpoints" / "last").state_dict()


def max_difference(a: Path, b: Path) -> float:
    first, second = weights(a), weights(b)
    return max((first[name] - second[name]).abs().max().item() for name in first)


def val_rows(run: Path) -> list[tuple[float, float]]:
    with open(run / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val_top1")]
    return [(float(row["val_top1"]), float(row["val_loss"])) for row in rows]


@pytest.fixture(scope="module")
def straight(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run on one process (in a fresh interpreter, like every other run here)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    done = subprocess.run(
        [sys.executable, *train_args(shards, out)], capture_output=True, text=True, timeout=300,
        env=environment(out.parent),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_ranks_train_as_one_process_and_count_each_val_image_once(
    shards: Path, straight: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp"
    done = torchrun(2, train_args(shards, out), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_difference(straight, out) < TOLERANCE
    assert "5 global batches of 12 per epoch, 6 per rank on 2 rank(s)" in done.stdout
    # Each rank scores its part of the val split; summed, the counts are those of one process (a rank scoring
    # everything would double them and report 2x the accuracy).
    for (top1, loss), (top1_ddp, loss_ddp) in zip(val_rows(straight), val_rows(out), strict=True):
        assert top1 == top1_ddp and abs(loss - loss_ddp) < 1e-5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 10


@pytest.mark.slow
def test_a_killed_run_resumes_bit_exactly_on_one_process(shards: Path, straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    killed = subprocess.run(
        [sys.executable, *train_args(shards, out)], capture_output=True, text=True, timeout=300,
        env=environment(tmp_path, SHARDS_TEST_DIE_AFTER="7"),
    )  # fmt: skip
    assert killed.returncode == 17, killed.stderr[-3000:]
    state = torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=True)
    assert state["stream"]["offset"] == 12 and state["stream"]["epoch"] == 1 and state["progress"]["step"] == 6
    resumed = subprocess.run(
        [sys.executable, "-m", "vitkit", "train", "--resume", str(out)], capture_output=True, text=True,
        timeout=300, env=environment(tmp_path),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("last", "best"):
        a = (straight / "checkpoints" / name / "model.safetensors").read_bytes()
        b = (out / "checkpoints" / name / "model.safetensors").read_bytes()
        assert a == b, name


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes_on_three_ranks_and_on_one(shards: Path, straight: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    killed = torchrun(2, train_args(shards, out), tmp_path, SHARDS_TEST_DIE_AFTER="4")
    assert killed.returncode != 0
    state_file = out / "checkpoints" / "last" / "training_state.pt"
    assert torch.load(state_file, weights_only=True)["stream"]["offset"] == 36  # step 3: 3 batches of 12 in
    again = tmp_path / "again"
    shutil.copytree(out, again)  # the same kill, to resume on one process too
    resumed = torchrun(3, ["-m", "vitkit", "train", "--resume", str(out)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert max_difference(straight, out) < TOLERANCE
    from vitkit.training import train

    train(None, again, resume=True, progress_bar=False)
    assert max_difference(straight, again) < TOLERANCE
