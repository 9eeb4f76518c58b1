"""Prometheus metrics, one registry per app (so tests can build many apps)."""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from latentcast.service.outcome import Outcome

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
        # what can stall every request at once: graph captures after warm-up, and collector pauses
        self.graph_captures = Counter(
            "latentcast_graph_captures", "CUDA graphs captured while serving (after warm-up)", registry=r
        )
        self.queue_seconds = Histogram(
            "latentcast_queue_seconds",
            "time a request waited for the inference thread",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_pause = Histogram(
            "latentcast_gc_pause_seconds",
            "Python garbage-collector pauses (all threads stop)",
            ["generation"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=r,
        )
        self.requests_done = Counter(
            "latentcast_scheduled_requests",
            "forecast requests leaving the scheduler, by how: solved, deadline (dropped unsolved past it), gone "
            "(dropped: the client left), failed, refused (over LATENTCAST_MAX_REQUEST_SECONDS), busy (refused: the "
            "work queued ahead would push it past its deadline)",
            ["model", "outcome"],
            registry=r,
        )
        self.connections_evicted = Counter(
            "latentcast_connections_evicted",
            "at LATENTCAST_MAX_CONNECTIONS: connections closed to make room for a new request, by what they were "
            "doing (waiting: no request, or its headers incomplete; body: the slowest upload), requests "
            "answered 503 for want of one to close (refused), and connections whose client took none of its "
            "answer for LATENTCAST_SEND_TIMEOUT_S (send)",
            ["phase"],
            registry=r,
        )
        self.slices_stopped = Counter(
            "latentcast_slices_stopped",
            "solves stopped part-way because every request in them had gone or passed its deadline",
            ["model"],
            registry=r,
        )
        self.solve_seconds = Histogram(
            "latentcast_request_solve_seconds",
            "time the inference thread spent on a request's slices",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cost_admitted = Counter(
            "latentcast_cost_admitted_seconds", "estimated solve seconds of admitted requests", ["model"], registry=r
        )
        self.cost_refused = Counter(
            "latentcast_cost_refused_seconds", "estimated solve seconds of refused requests", ["model"], registry=r
        )
        self.warnings = Counter(
            "latentcast_warnings",
            "warnings in answers, by model and kind (out_of_bounds, unusual_value, unusual_forecast)",
            ["model", "kind"],
            registry=r,
        )
        self.refused = Counter(
            "latentcast_refused_series", "series refused and listed in a 200 (on_error=skip)", ["model"], registry=r
        )
        self.decodes = Counter(
            "latentcast_decoded_bodies",
            "request bodies decoded, by where: inline (small), process or thread (over LATENTCAST_OFFLOAD_BYTES)",
            ["where"],
            registry=r,
        )
        self._gc_start = 0.0

    def count_outcome(self, model: str, out: Outcome) -> None:
        for notes in out.warnings:
            for note in notes:
                self.warnings.labels(model, note.get("kind", "other")).inc()
        if out.errors:
            self.refused.labels(model).inc(len(out.errors))

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_pause.labels(str(info["generation"])).observe(time.perf_counter() - self._gc_start)

    def watch_gc(self, on: bool) -> None:
        """Time every collection into latentcast_gc_pause_seconds (off again at shutdown)."""
        if on and self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        elif not on and self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
