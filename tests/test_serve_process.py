"""`vitkit serve` as a process: it binds 127.0.0.1, answers, and on SIGTERM finishes the requests in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve_helpers import free_port, image_bytes, tiny_checkpoint


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"vitkit serve exited with {process.returncode}: {process.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("vitkit serve was not ready in time")


def slowly(data: bytes, pause: float) -> Iterator[bytes]:
    """An upload that arrives in two parts `pause` seconds apart (chunked), so it is in flight for that long."""
    yield data[:64]
    time.sleep(pause)
    yield data[64:]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_sigterm_finishes_requests_in_flight(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    port = free_port()
    command = [sys.executable, "-m", "vitkit", "serve", str(checkpoint), "--port", str(port), "--threads", "1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        replies: list[httpx.Response] = []

        def post(seed: int) -> None:
            body = slowly(image_bytes(seed), pause=2.0)
            replies.append(httpx.post(f"{url}/v1/predict", content=body, headers={"content-type": "image/png"},
                                      timeout=30))  # fmt: skip

        clients = [threading.Thread(target=post, args=(seed,)) for seed in range(4)]
        for client in clients:
            client.start()
        time.sleep(0.7)  # the four uploads are half sent: in flight
        assert not replies
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(30)
        assert process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has finished
        assert time.monotonic() - signalled > 0.8  # it waited for the uploads to finish
    finally:
        if process.poll() is None:
            process.kill()
    assert [reply.status_code for reply in replies] == [200] * 4
    assert all(reply.json()["top_k"] for reply in replies)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)
    log = process.stderr.read()
    assert "127.0.0.1" in log and "Finished server process" in log


def test_access_log_flag_reaches_uvicorn(tmp_path, monkeypatch):
    import torch
    import uvicorn

    from vitkit.cli.main import main

    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    seen: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.append(options))
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)  # keep this test process's threads
    assert main(["serve", str(checkpoint), "--threads", "1"]) == 0
    assert main(["serve", str(checkpoint), "--threads", "1", "--no-access-log"]) == 0
    assert [options["access_log"] for options in seen] == [True, False]
    assert all(options["host"] == "127.0.0.1" for options in seen)


def worker_processes(pid: int) -> list[int]:
    """The children of `pid` that multiprocessing spawned as workers (not its resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.slow
def test_workers_are_replicas_of_one_model(tmp_path):
    """--workers 2: two processes behind one port, each loading the model; every request is answered."""
    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    port = free_port()
    command = [sys.executable, "-m", "vitkit", "serve", str(checkpoint), "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, seconds=90)
        answers = [
            httpx.post(
                f"{url}/v1/predict", content=image_bytes(seed), headers={"content-type": "image/png"}, timeout=30
            )
            for seed in range(6)
        ]
        workers = worker_processes(process.pid)
        card = httpx.get(f"{url}/v1/model", timeout=10).json()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert [answer.status_code for answer in answers] == [200] * 6
    assert len(workers) == 2 and card["serving"]["max_batch"] == 32 and card["serving"]["threads"] >= 1
