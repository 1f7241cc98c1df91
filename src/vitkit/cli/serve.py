"""Serve a model over HTTP: an API (/v1/predict, /v1/explain, /v1/model, /docs), a web page at / and metrics.

CKPT is anything `vitkit predict` takes (a run directory, a checkpoint, a .onnx or .pt2 file, a hub id), run by
the backend `vitkit predict` would pick unless --backend says otherwise. Concurrent requests are batched (up to
--max-batch images, waiting at most --max-wait-ms); past --max-pending requests the server answers 503 with
Retry-After. Binds 127.0.0.1 unless --host says otherwise. SIGTERM (or Ctrl-C) stops accepting connections and
finishes the requests in flight. See docs/serve.md.
"""

from __future__ import annotations

import argparse
import logging
import os

from vitkit.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit serve`."""
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="run directory, checkpoint directory, .onnx/.pt2 file or hub id"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime", "aoti"),
        help="default: onnxruntime for a .onnx file, aoti (AOTInductor) for a .pt2 package, else torch",
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (torch backend; default cpu)")
    parser.add_argument(
        "--precision", choices=("bf16", "fp32"), help="torch backend; default: the precision the run trained with"
    )
    parser.add_argument("--max-batch", type=int, default=32, help="most images per model call (default 32)")
    parser.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="longest a request waits for others to join its batch (5)"
    )
    parser.add_argument(
        "--max-pending", type=int, default=256, help="requests admitted at once; past it 503 + Retry-After (256)"
    )
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload in MiB; larger: 413 (10)")
    parser.add_argument(
        "--max-megapixels", type=float, default=40.0, help="largest decoded image in megapixels; larger: 413 (40)"
    )
    parser.add_argument("--top-k", type=int, default=5, help="labels per answer unless the request asks (5)")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with the model (default 1)")
    parser.add_argument(
        "--threads", type=int, default=0, help="model threads per worker (default: the CPU's cores / --workers)"
    )
    parser.add_argument("--decode-threads", type=int, default=2, help="image-decoding threads per worker (2)")
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="no log line per request (/metrics still counts them)",
    )


def run(args: argparse.Namespace) -> int:
    """Load the model (in each worker), then serve until SIGTERM or Ctrl-C."""
    import uvicorn

    from vitkit.serve.app import ENV_SETTINGS, ServeSettings, create_app, dump_settings
    from vitkit.serve.engine import Engine

    for flag in ("max_batch", "max_pending", "workers", "decode_threads", "top_k"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    for flag in ("max_upload_mb", "max_megapixels"):
        if getattr(args, flag) <= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}")
    if args.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    settings = ServeSettings(
        source=args.checkpoint,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        threads=threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_pending=args.max_pending,
        max_upload_mb=args.max_upload_mb,
        max_megapixels=args.max_megapixels,
        decode_threads=args.decode_threads,
        top_k=args.top_k,
    )
    options = {
        "host": args.host,
        "port": args.port,
        "log_level": "info",
        "access_log": args.access_log,
        "timeout_graceful_shutdown": 30,
    }
    where = f"http://{args.host}:{args.port}"
    if args.workers == 1:
        engine = Engine.load(settings.source, settings.backend, settings.device, settings.threads, settings.precision)
        engine.warm_up(settings.max_batch)
        logging.getLogger("vitkit.serve").info(
            "serving %s (%s) at %s: page /, API docs /docs", engine.name, engine.backend, where
        )
        uvicorn.run(create_app(engine, settings), **options)
        return 0
    # Fail here, once, on a bad CKPT (not in each of N workers).
    Engine.load(settings.source, settings.backend, "cpu", 1, settings.precision)
    os.environ[ENV_SETTINGS] = dump_settings(settings)
    logging.getLogger("vitkit.serve").info("serving %s with %d workers at %s", args.checkpoint, args.workers, where)
    serve_replicas(options, args.workers)
    return 0


def serve_replicas(options: dict, workers: int) -> None:
    """uvicorn's `--workers` supervisor on a listening socket made as TCP. The one uvicorn binds itself has protocol
    0, so asyncio leaves Nagle's algorithm on for its connections and every keep-alive request after the first
    waits ~40 ms for a delayed ACK (uvicorn issue 3149; measured here: 48 ms against 9 ms per request)."""
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("vitkit.serve.app:app_from_environment", factory=True, workers=workers, **options)
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((config.host, config.port))
    except OSError as error:
        where = f"{config.host}:{config.port}"
        raise UsageError(f"cannot listen on {where}: {error.strerror}; choose another --port") from None
    listener.set_inheritable(True)
    Multiprocess(config, sockets=[listener]).run()
