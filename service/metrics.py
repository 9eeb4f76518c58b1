"""Prometheus metrics, one registry per app (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # no *_created series: one timestamp per label set only bloats /metrics

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "latentcast_requests", "HTTP requests by path and status", ["path", "status"], registry=r
        )
        self.errors = Counter("latentcast_errors", "HTTP responses with status >= 400", ["path", "status"], registry=r)
        self.latency = Histogram(
            "latentcast_request_seconds", "request latency", ["path"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.series_per_request = Histogram(
            "latentcast_series_per_request", "series per forecast request", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_series = Histogram(
            "latentcast_batch_series", "series per solve (micro-batch)", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "latentcast_batch_requests", "requests per solve (micro-batch)", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "latentcast_batch_seconds", "time per solve", buckets=LATENCY_BUCKETS, registry=r
        )
        self.nfe = Counter(
            "latentcast_solver_nfe", "batched evaluations of the latent vector field", ["model"], registry=r
        )
        self.queue_series = Gauge("latentcast_queue_series", "series waiting for the inference thread", registry=r)
        self.inflight = Gauge("latentcast_inflight_requests", "forecast requests being served", registry=r)
        self.ready = Gauge("latentcast_ready", "1 once models are loaded and warmed up", registry=r)
