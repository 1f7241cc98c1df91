"""`vitkit serve` as a process: it binds 127.0.0.1, answers, and on SIGTERM finishes the requests in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

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


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_sigterm_finishes_requests_in_flight(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "tiny")
    port = free_port()
    command = [sys.executable, "-m", "vitkit", "serve", str(checkpoint), "--port", str(port), "--max-batch", "8",
               "--max-wait-ms", "1500", "--threads", "1"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        replies: list[httpx.Response] = []

        def post(seed: int) -> None:
            body = image_bytes(seed)
            replies.append(httpx.post(f"{url}/v1/predict", content=body, headers={"content-type": "image/png"},
                                      timeout=30))  # fmt: skip

        clients = [threading.Thread(target=post, args=(seed,)) for seed in range(4)]
        for client in clients:
            client.start()
        time.sleep(0.6)  # the four are in the batcher's 1.5-s window, not yet answered
        assert not replies
        process.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(30)
        assert process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has finished
    finally:
        if process.poll() is None:
            process.kill()
    assert [reply.status_code for reply in replies] == [200] * 4
    assert {reply.json()["batch"]["size"] for reply in replies} == {4}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)
    log = process.stderr.read()
    assert "127.0.0.1" in log and "Finished server process" in log
