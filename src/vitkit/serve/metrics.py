"""Prometheus metrics of one server process (requests, errors by kind, batch sizes, queue wait, latency)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's counters and histograms in a registry of their own (one per app, so tests can make many)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("vitkit_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("vitkit_errors", "requests refused or failed, by kind", ["kind"], registry=r)
        self.latency = Histogram(
            "vitkit_request_seconds", "time to answer a request", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram("vitkit_batch_size", "images per model batch", buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "vitkit_queue_wait_seconds", "time an image waited for its batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.model_time = Histogram("vitkit_batch_seconds", "model time per batch", buckets=LATENCY_BUCKETS, registry=r)
        self.pending = Gauge("vitkit_pending_requests", "admitted requests not yet answered", registry=r)

    def batch(self, size: int, waits: list[float], run_s: float) -> None:
        """Record one batch the model ran."""
        self.batch_size.observe(size)
        self.model_time.observe(run_s)
        for wait in waits:
            self.queue_wait.observe(wait)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
