"""`vitkit serve` under load on this machine's loopback: throughput and p50/p99 latency at several concurrencies,
batched against a naive one-request-at-a-time server of the same model, beside offline `vitkit predict`
throughput; and a soak (many requests with bad uploads mixed in: status counts and the server's RSS growth).

    python benchmarks/speed/serve_load.py runs/cifar10 --data ../shared/data/cifar10/val --out runs/serve_load
    python benchmarks/speed/serve_load.py runs/cifar10 --data ../shared/data/cifar10/val --soak 20000 \
        --bad-fraction 0.05
    python benchmarks/speed/serve_load.py --table runs/serve_load/*.json     # the results as a markdown table

Each server is `python -m vitkit serve` in a subprocess on 127.0.0.1 (the "naive" one: --max-batch 1
--decode-threads 1, so one image runs at a time); the load generator (asyncio + httpx, one process) shares the
CPU with it, as a client on the same machine would. Every run is bounded in requests and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pick_images(data: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` image files under `data`, a fixed random sample."""
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images under {data}")
    random.Random(seed).shuffle(files)
    return files[:count]


def rss_mib(pid: int) -> float:
    """Resident memory of a process (and its children: uvicorn workers) in MiB, from /proc."""
    total = 0.0
    for candidate in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Server:
    """`vitkit serve CKPT ...` in a subprocess on a free loopback port."""

    def __init__(self, checkpoint: str, *flags: str, serial: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "vitkit", "serve", checkpoint, "--port", str(self.port), *flags]
        if serial:  # the one-request-at-a-time script below, not vitkit serve
            command = [sys.executable, __file__, "--serial-app", checkpoint, str(self.port), *flags]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited: {self.process.stderr.read().decode()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("server not ready in 180 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Connection:
    """One keep-alive HTTP/1.1 connection sending POSTs: a minimal client, so that the load generator, on the same
    two cores as the server, spends little CPU (httpx spent ~2.6 ms per request here, as much as the server)."""

    def __init__(self, url: str) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, kind: str) -> tuple[int, bytes]:
        """(status, body) of one POST; reconnects when the server closed the connection."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, int(self.port))
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        self.writer.write(head.encode() + body)
        try:
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            headers = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            payload = await self.reader.readexactly(int(headers.get("content-length", 0)))
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(url: str, bodies: list[tuple[bytes, str]], concurrency: int, total: int) -> dict:
    """Send `total` requests from `concurrency` concurrent callers; latencies, statuses, throughput."""
    latencies, statuses, batch_sizes = [], {}, []
    counter = iter(range(total))

    async def caller() -> None:
        connection = Connection(url)
        for index in counter:
            body, kind = bodies[index % len(bodies)]
            started = time.perf_counter()
            status, payload = await connection.post("/v1/predict?top_k=1", body, kind)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                batch_sizes.append(json.loads(payload)["batch"]["size"])
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "concurrency": concurrency,
        "requests": total,
        "seconds": round(wall, 2),
        "images_per_s": round(total / wall, 1),
        "p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "mean_batch": round(statistics.mean(batch_sizes), 2) if batch_sizes else 0,
        "statuses": statuses,
    }


def offline_predict(checkpoint: str, files: list[Path], threads: int) -> dict:
    """`vitkit predict`'s own throughput on the same files (decode + model, chunks of 64), model load excluded."""
    code = f"""
import json, sys, time, torch
torch.set_num_threads({threads})
from vitkit.export.runtime import backend_for, load_exported
from vitkit.inference import load_for_inference
from vitkit.inference.predict import top_predictions
source, files = sys.argv[1], sys.argv[2:]
loaded = load_for_inference(source, "cpu") if backend_for(None, source) == "torch" else load_exported(source, {threads})
top_predictions(loaded, files[:64], 1)
start = time.perf_counter(); top_predictions(loaded, files, 1); wall = time.perf_counter() - start
print(json.dumps({{"images": len(files), "seconds": round(wall, 2), "images_per_s": round(len(files) / wall, 1)}}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code, checkpoint, *map(str, files)], capture_output=True, text=True,
                         env=env, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def bad_uploads(good: bytes) -> list[tuple[bytes, str]]:
    """The kinds of bad upload the soak mixes in (each must be a 4xx)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))  # fmt: skip
    return [
        (b"this is not an image", "image/jpeg"),
        (good[: len(good) // 3], "image/jpeg"),  # truncated
        (b"", "image/png"),
        (good, "text/plain"),
        (bomb, "image/png"),
    ]


async def soak(url: str, good: list[bytes], total: int, bad_fraction: float, concurrency: int, pid: int) -> dict:
    """`total` requests, `bad_fraction` of them bad uploads: status counts, RSS at start, peak and end."""
    rng = random.Random(0)
    bad = bad_uploads(good[0])
    plan = [rng.choice(bad) if rng.random() < bad_fraction else (rng.choice(good), "image/jpeg") for _ in range(total)]
    statuses: dict[int, int] = {}
    rss = {"start": rss_mib(pid), "peak": 0.0}
    timeline: list[tuple[int, float]] = []  # (requests sent, RSS MiB) every 2,000 requests
    counter = iter(range(total))
    failures = 0

    async def caller() -> None:
        nonlocal failures
        connection = Connection(url)
        for index in counter:
            body, kind = plan[index]
            try:
                status, _ = await connection.post("/v1/predict?top_k=1", body, kind)
                statuses[status] = statuses.get(status, 0) + 1
            except (OSError, asyncio.IncompleteReadError):
                failures += 1
            if index % 500 == 0:
                rss["peak"] = max(rss["peak"], rss_mib(pid))
            if index % 2000 == 0:
                timeline.append((index, round(rss_mib(pid), 1)))
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    rss["end"] = rss_mib(pid)
    rss["peak"] = max(rss["peak"], rss["end"])
    return {
        "requests": total,
        "bad_planned": sum(1 for body, kind in plan if (body, kind) in bad),
        "seconds": round(time.perf_counter() - started, 1),
        "statuses": dict(sorted(statuses.items())),
        "5xx": sum(n for status, n in statuses.items() if status >= 500),
        "connection_failures": failures,
        "rss_mib": {key: round(value, 1) for key, value in rss.items()},
        "rss_growth_mib": round(rss["end"] - rss["start"], 1),
        "rss_timeline_mib": timeline,
        "server_alive": True,
    }


def markdown_table(paths: list[Path]) -> str:
    """The results files of several runs as one markdown table (what docs/serve.md shows)."""
    lines = [
        "| model | server | c=1: img/s, p50 / p99 ms | c=8 | c=32 | mean batch at 32 | offline predict img/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path in paths:
        result = json.loads(path.read_text())
        for name in ("serial", "naive", "batched"):
            if name not in result:
                continue
            cells = [f"{r['images_per_s']:.0f}, {r['p50_ms']:.0f} / {r['p99_ms']:.0f}" for r in result[name]]
            server = name if result.get("workers", 1) == 1 else f"{name}, --workers {result['workers']}"
            offline = result["offline_predict"]["images_per_s"] if name == "batched" else ""
            lines.append(f"| {result['checkpoint']} | {server} | {' | '.join(cells)} | "
                         f"{result[name][-1]['mean_batch']} | {offline} |")  # fmt: skip
    return "\n".join(lines)


def serial_app(checkpoint: str, port: int, threads: int) -> None:
    """What people write before `vitkit serve`: one endpoint that decodes and classifies on the event loop, so one
    request at a time (nothing overlaps), with vitkit's own loading, decoding and classification."""
    import uvicorn
    from fastapi import FastAPI

    from vitkit.data.decode import decode_bytes
    from vitkit.serve.engine import Engine

    engine = Engine.load(checkpoint, threads=threads)
    engine.warm_up(1)
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        pixels = engine.pixels(decode_bytes(await request.body()))  # blocks the loop: requests run one by one
        return JSONResponse({"top_k": engine.top(engine.probabilities([pixels])[0], 1), "batch": {"size": 1}})

    @app.get("/readyz")
    async def ready() -> dict:
        return {"status": "ready"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    if sys.argv[1:2] == ["--table"]:
        print(markdown_table([Path(p) for p in sys.argv[2:]]))
        return
    if sys.argv[1:2] == ["--serial-app"]:
        serial_app(sys.argv[2], int(sys.argv[3]), int(sys.argv[sys.argv.index("--threads") + 1]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="anything `vitkit serve` takes (run dir, .onnx, ...)")
    parser.add_argument("--data", type=Path, required=True, help="folder of images to send")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=640, help="requests per concurrency level (bounded)")
    parser.add_argument("--images", type=int, default=256, help="distinct images to cycle through")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2, help="model threads of each server and of offline predict")
    parser.add_argument("--workers", type=int, default=1, help="processes of the batched server (--workers)")
    parser.add_argument("--skip-naive", action="store_true", help="measure the batched server only")
    parser.add_argument("--serial", action="store_true", help="measure the one-request-at-a-time script only")
    parser.add_argument("--soak", type=int, default=0, help="run the soak with this many requests instead")
    parser.add_argument("--bad-fraction", type=float, default=0.05)
    parser.add_argument("--soak-concurrency", type=int, default=32)
    parser.add_argument(
        "--server-args",
        default="",
        help="more flags for the batched server, written with '=': --server-args='--threads 1'",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    files = pick_images(args.data, args.images)
    good = [f.read_bytes() for f in files]
    kind = "image/png" if files[0].suffix.lower() == ".png" else "image/jpeg"
    bodies = [(body, kind) for body in good]
    common = ["--threads", str(args.threads), "--max-pending", "1024"]
    batched_flags = [*common, "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    if args.workers > 1:  # each worker gets threads / workers model threads
        batched_flags += ["--workers", str(args.workers), "--threads", str(max(1, args.threads // args.workers))]
    batched_flags += shlex.split(args.server_args)
    results: dict = {"checkpoint": args.checkpoint, "data": str(args.data), "threads": args.threads,
                     "server_args": args.server_args,
                     "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "workers": args.workers,
                     "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    if args.soak:
        with Server(args.checkpoint, *batched_flags) as server:
            asyncio.run(load(server.url, bodies, 8, 200))  # warm up before the RSS baseline
            results["soak"] = asyncio.run(
                soak(server.url, good, args.soak, args.bad_fraction, args.soak_concurrency, server.process.pid)
            )
            results["soak"]["server_alive"] = server.process.poll() is None and (
                httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
            )
        print(json.dumps(results["soak"], indent=2))
    else:
        naive_flags = [*common, "--max-batch", "1", "--max-wait-ms", "0", "--decode-threads", "1"]
        servers = [("naive", naive_flags), ("batched", batched_flags)][1 if args.skip_naive else 0 :]
        if args.serial:
            servers = [("serial", common[:2])]
        for name, flags in servers:
            with Server(args.checkpoint, *flags, serial=name == "serial") as server:
                asyncio.run(load(server.url, bodies, 8, 64))  # warm-up
                results[name] = [asyncio.run(load(server.url, bodies, c, args.requests)) for c in args.concurrency]
            for row in results[name]:
                print(name, json.dumps(row))
        results["offline_predict"] = offline_predict(args.checkpoint, files, args.threads)
        print("offline predict", json.dumps(results["offline_predict"]))
        top = max(args.concurrency)
        if "batched" not in results:
            results["summary"] = {}
        else:
            batched = next(r for r in results["batched"] if r["concurrency"] == top)
            results["summary"] = {
                f"p99_ms_at_{top}": batched["p99_ms"],
                "share_of_offline": round(batched["images_per_s"] / results["offline_predict"]["images_per_s"], 2),
            }
            if "naive" in results:
                naive = next(r for r in results["naive"] if r["concurrency"] == top)
                results["summary"][f"speedup_at_{top}"] = round(batched["images_per_s"] / naive["images_per_s"], 2)
        print("summary", json.dumps(results["summary"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
