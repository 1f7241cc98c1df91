"""A run killed with SIGKILL and resumed ends bit-identical to a run never interrupted (CPU, same seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vitkit.training.metrics import read_metrics

# Every source of randomness is on: weight init, batch order, pad-crop, flips, RandAugment, erasing, Mixup/CutMix,
# dropout, stochastic depth; plus bf16 autocast, EMA and mid-epoch checkpoints. 90 train images, 12 steps/epoch.
ARGS = [
    "train", "--data", "digits", "--limit-per-class", "10", "--img-size", "16", "--model", "mu/4",
    "--hidden-dim", "32", "--depth", "2", "--num-heads", "2", "--mlp-dim", "64", "--batch-size", "8",
    "--grad-accum", "2", "--epochs", "6", "--save-every", "4", "--threads", "1", "--precision", "bf16",
    "--ema-decay", "0.9", "--dropout", "0.1", "--drop-path", "0.1", "--crop", "pad", "--hflip",
    "--randaugment-n", "1", "--mixup", "0.8", "--cutmix", "1.0", "--random-erasing", "0.25", "--no-progress",
    "--attention", "eager",
]  # fmt: skip
# The kernel is pinned because the two runs are separate: with `auto` each times the kernels and, where two are
# within noise (these tiny shapes on a busy CI machine), they may pick different ones, which round differently.
# A resumed run keeps its own recorded choice (test_training_state.py).
# The efficiency levers (docs/efficiency.md): a tokenizer stem, Muon + AdamW, patch dropout, mimetic init,
# multi-crop TTA. Muon's momentum and patch dropout's draws must resume exactly too.
LEVERS = [
    "--model", "cct2+Mini/4", "--optimizer", "muon", "--patch-drop", "0.25", "--attn-init", "mimetic",
    "--eval-tta", "multicrop",
]  # fmt: skip
TIMEOUT_S = 300


def vitkit(*argv: str, tmp_path: Path) -> subprocess.Popen:
    """Start `vitkit ARGV` in a fresh interpreter with one OpenMP thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VITKIT_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "vitkit.cli.main", *argv]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoint_step(run_dir: Path) -> int:
    """The step of checkpoints/last (0 while there is none or it is being written)."""
    try:
        return json.loads((run_dir / "checkpoints" / "last" / "config.json").read_text())["metadata"]["step"]
    except (OSError, ValueError, KeyError):
        return 0


def finish(process: subprocess.Popen) -> str:
    """Wait for a process, failing with its output when it fails."""
    output, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, output
    return output


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], LEVERS], ids=["defaults", "levers"])
def test_sigkill_then_resume_is_bit_identical(tmp_path: Path, extra: list[str]) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    args = [*ARGS, *extra]
    reference = vitkit(*args, "--out", str(straight), tmp_path=tmp_path)
    victim = vitkit(*args, "--out", str(killed), tmp_path=tmp_path)
    deadline = time.monotonic() + TIMEOUT_S
    while checkpoint_step(killed) < 5 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed; make it longer"
    assert not (killed / "summary.json").exists()
    stopped_at = checkpoint_step(killed)
    assert 0 < stopped_at < 72
    finish(reference)
    output = finish(vitkit("train", "--resume", str(killed), tmp_path=tmp_path))
    assert "resuming" in output or "epoch" in output

    for name in ("last", "best", "ema"):
        a = (straight / "checkpoints" / name / "model.safetensors").read_bytes()
        b = (killed / "checkpoints" / name / "model.safetensors").read_bytes()
        assert a == b, f"checkpoints/{name} differs after resuming from step {stopped_at}"
    rows_a, rows_b = read_metrics(straight / "metrics.csv"), read_metrics(killed / "metrics.csv")
    exact = ["kind", "epoch", "step", "lr", "loss", "acc", "grad_norm", "val_loss", "val_top1", "ema_val_top1"]
    assert [[r[k] for k in exact] for r in rows_a] == [[r[k] for k in exact] for r in rows_b]
    summary_a = json.loads((straight / "summary.json").read_text())
    summary_b = json.loads((killed / "summary.json").read_text())
    for key in ("val_top1", "val_top5", "best_epoch", "epochs", "steps", "final_val_top1"):
        assert summary_a[key] == summary_b[key], key
