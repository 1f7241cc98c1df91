"""torchrun on CPU: 2 gloo ranks train the same weights as 1 process with the same global batch (DDP and FSDP2)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitkit

# Deterministic data path (no random crops or flips, no dropout): the only difference between the runs is how
# the global batch of 16 is split over processes. SGD, because Adam turns the pure rounding noise of gradients
# that are zero in exact arithmetic (the key bias) into full-size updates of either sign.
ARGS = [
    "--data", "digits", "--limit-per-class", "8", "--img-size", "16", "--model", "mu/4", "--hidden-dim", "32",
    "--depth", "2", "--num-heads", "2", "--mlp-dim", "64", "--batch-size", "16", "--epochs", "1",
    "--precision", "fp32", "--threads", "1", "--attention", "math", "--crop", "none", "--no-hflip",
    "--warmup-steps", "1", "--optimizer", "sgd", "--lr", "0.05", "--no-progress",
]  # fmt: skip


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on, for torchrun's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(out: Path, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=N -m vitkit train ...` on this machine, with a private decode cache."""
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", "-m", "vitkit", "train", *ARGS, *extra, "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VITKIT_CACHE": str(out.parent / "cache")}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def single_process(out: Path, *extra: str) -> None:
    """The same run in this process (no torchrun)."""
    from vitkit.cli.main import main

    assert main(["train", *ARGS, *extra, "--out", str(out)]) == 0


def weights(run: Path) -> dict[str, torch.Tensor]:
    return vitkit.load(run / "checkpoints" / "last").state_dict()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    single_process(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_equal_one_process(reference: Path, tmp_path: Path, mode: str) -> None:
    out = tmp_path / mode
    done = torchrun(out, "--distributed", mode)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, tensor in weights(reference).items():
        torch.testing.assert_close(weights(out)[name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distributed"] == mode and summary["world_size"] == 2 and summary["steps"] == 4
    # Written once, by rank 0: one header and one row per step and epoch, one line per epoch in the log.
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + summary["steps"] + summary["epochs"]
    assert done.stdout.count("epoch 1/1: train") == 1


@pytest.mark.slow
def test_resume_on_another_world_size(reference: Path, tmp_path: Path) -> None:
    """A run started on 2 ranks continues on 1 process with the same global batch and schedule."""
    out = tmp_path / "run"
    done = torchrun(out, "--epochs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    state_file = out / "checkpoints" / "last" / "training_state.pt"
    state = torch.load(state_file, weights_only=True)
    assert state["progress"]["step"] == 8
    # Plan a third epoch, as if the job had been stopped after two of three.
    state["progress"]["planned_epochs"] = 3
    torch.save(state, state_file)
    (out / "config.yaml").write_text((out / "config.yaml").read_text().replace("epochs: 2", "epochs: 3"))
    from vitkit.training import train

    summary = train(None, out, resume=True, progress_bar=False)
    assert summary["steps"] == 12 and summary["world_size"] == 1


def test_a_global_batch_must_divide_over_the_ranks() -> None:
    from vitkit.data import DataConfig, load_dataset, make_loader

    train = load_dataset(DataConfig(path="digits", img_size=16, limit_per_class=4)).train
    with pytest.raises(ValueError, match="does not divide evenly over 3 processes"):
        make_loader(train, 16, shuffle=True, seed=0, epoch=0, rank=0, world_size=3)
    shares = [
        torch.cat(
            [i for _, i in make_loader(train, 8, shuffle=True, seed=0, epoch=0, drop_last=True, rank=r, world_size=2)]
        )
        for r in (0, 1)
    ]
    whole = torch.cat([i for _, i in make_loader(train, 8, shuffle=True, seed=0, epoch=0, drop_last=True)])
    assert torch.equal(torch.stack([s.view(-1, 4) for s in shares], 1).reshape(-1), whole)
