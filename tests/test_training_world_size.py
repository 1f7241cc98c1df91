"""A run does not depend on its world size: with the default (DeiT) augmentation, 2 gloo ranks under torchrun
train the same weights as 1 process at the same global batch, and a 2-rank run resumed on 1 process continues
as the 1-process run does. Every rank draws the whole global batch's augmentation from the (seed, step) stream
and applies its own share (vitkit.data.augment); the test model has no dropout or stochastic depth, which keep
each rank's own seed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitkit

# Measured here (CPU, fp32, SGD): max |w(1 process) - w(2 ranks)| = 3.0e-8 after one epoch and after the resumed
# second one (2.98e-8 both), the rounding of the gradient all-reduce; with per-rank streams it was 2.7e-2.
TOLERANCE = 1e-6
ARGS = [
    "--data", "digits", "--limit-per-class", "8", "--img-size", "16", "--model", "mu/4", "--hidden-dim", "32",
    "--depth", "2", "--num-heads", "2", "--mlp-dim", "64", "--batch-size", "16", "--epochs", "1",
    "--precision", "fp32", "--threads", "1", "--attention", "math", "--warmup-steps", "1", "--optimizer", "sgd",
    "--lr", "0.05", "--no-progress",
    # The default augmentation of AugmentConfig (the digits recipe's own is lighter).
    "--crop", "rrc", "--hflip", "--randaugment-n", "2", "--mixup", "0.8", "--cutmix", "1.0",
    "--random-erasing", "0.25", "--label-smoothing", "0.1",
]  # fmt: skip


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on, for torchrun's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(out: Path) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=2 -m vitkit train ...` on this machine, with a private decode cache."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", "-m", "vitkit", "train", *ARGS, "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VITKIT_CACHE": str(out.parent / "cache")}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return vitkit.load(run / "checkpoints" / "last").state_dict()


def max_difference(a: Path, b: Path) -> float:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    return max((first[name] - second[name]).abs().max().item() for name in first)


def plan_another_epoch(run: Path) -> None:
    """Turn a finished 1-epoch run into epoch 1 of 2, as if the job had been stopped there."""
    state_file = run / "checkpoints" / "last" / "training_state.pt"
    state = torch.load(state_file, weights_only=True)
    state["progress"]["planned_epochs"] = 2
    torch.save(state, state_file)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("epochs: 1", "epochs: 2"))


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_augmentation_and_resume_on_one(tmp_path: Path) -> None:
    from vitkit.cli.main import main
    from vitkit.training import train

    single, double = tmp_path / "single", tmp_path / "double"
    assert main(["train", *ARGS, "--out", str(single)]) == 0
    done = torchrun(double)
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_difference(single, double) < TOLERANCE
    for run in (single, double):  # the second epoch: both on one process, the 2-rank run resumed
        plan_another_epoch(run)
        assert train(None, run, resume=True, progress_bar=False)["steps"] == 8
    assert max_difference(single, double) < TOLERANCE
