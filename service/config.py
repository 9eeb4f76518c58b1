"""Service settings: one pydantic-settings class, environment prefix LATENTCAST_, checked at start."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from latentcast.models import ModelBundle

RENAMED = {
    "LATENTCAST_MAX_VALUE_SIGMAS": "LATENTCAST_UNUSUAL_VALUE_SCALES",
    "LATENTCAST_MAX_OUTPUT_SIGMAS": "LATENTCAST_UNUSUAL_OUTPUT_SCALES",
}


class Settings(BaseSettings):
    """Every knob of the server. Lists come from the environment as JSON (LATENTCAST_MODELS='["a.pt"]')."""

    model_config = SettingsConfigDict(env_prefix="LATENTCAST_", extra="ignore", frozen=True)

    models: list[Path] = Field(default_factory=list, description="checkpoints to serve; empty = embedded defaults")
    default_model: str | None = Field(
        None, description="model used when a request names none (default: pbcseq if served, else the first)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    # micro-batching
    batching: bool = Field(True, description="gather concurrent requests' series into one solve")
    max_batch_series: int = Field(4096, ge=1, description="series per solve (before × latent samples)")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="how long a batch waits for more series; 0 = greedy: solve what is queued "
        "as soon as the inference thread is free (requests arriving meanwhile form the next batch)",
    )
    max_queue_series: int = Field(
        200_000, ge=1, description="series waiting; beyond this: 503 + Retry-After (413 for a request larger alone)"
    )
    max_queue_points: int = Field(
        20_000_000,
        ge=1,
        description="observations + query times waiting (bounds the queue's memory); beyond this: 503 + Retry-After",
    )
    max_solve_values: int = Field(
        1 << 24,
        ge=1024,
        description="most values (samples × series × query times × latent width) one solve holds; larger "
        "batches are solved in chunks, so a request's memory does not grow with its size",
    )
    slice_seconds: float = Field(
        0.05,
        gt=0,
        le=10,
        description="the inference thread works in slices of about this much estimated solve time, smallest "
        "remaining request first, so a small request waits at most one slice behind a large one",
    )
    express_seconds: float = Field(
        0.05,
        ge=0,
        le=10,
        description="requests estimated at no more than this many seconds of solving also have a second "
        "inference thread of their own, so they are answered while a large request's slice runs (0: one thread)",
    )
    max_request_seconds: float = Field(
        10.0,
        gt=0,
        description="a request whose estimated solve time on this server exceeds this is refused (413) before "
        "it queues (estimated from its series, samples, query times and tolerance): a third of the default "
        "deadline, room for an estimate half the truth and for the small requests solved beside it",
    )
    cpu_small_batch_rows: int = Field(
        256,
        ge=0,
        description="on a CPU, solves of at most this many rows (series × latent samples) run on one "
        "intra-op thread: their kernels are too small to share, and on a busy machine each parallel region "
        "waits for threads that may not be running (0 = never)",
    )

    # limits per request
    max_body_bytes: int = Field(32 * 2**20, ge=1024, description="request body, as sent (Arrow: also decompressed)")
    max_series: int = Field(10_000, ge=1)
    max_points: int = Field(10_000, ge=1, description="observations per series")
    max_query_times: int = Field(2_000, ge=1, description="query times per series")
    max_total_points: int = Field(2_000_000, ge=1, description="observations + query times + events per request")
    max_quantiles: int = Field(32, ge=1, description="quantile levels per request")
    max_response_values: int = Field(
        1 << 24,
        ge=1,
        description="numbers in an answer: query times × channels × (1 + quantiles + samples); 413 beyond",
    )
    max_response_bytes: int = Field(
        256 * 2**20,
        ge=1024,
        description="an answer's size, bounded from above before solving (each format estimates its own); 413 beyond",
    )
    max_errors: int = Field(50, ge=1, description="errors listed in a 4xx body (the rest are counted)")
    max_horizon_factor: float = Field(
        2.0,
        gt=0,
        description="query times must lie within this × the longest training series span of the "
        "observations' first/last time",
    )
    unusual_value_scales: float = Field(
        20.0,
        gt=0,
        description="observed values further than this from the training data, on the model's own scale (e.g. "
        "robust scales from the training median, after the log of log channels), are answered with a warning",
    )
    unusual_output_scales: float = Field(
        50.0,
        gt=0,
        description="an answer further than this from the training data, on the model's own scale, comes with a "
        "warning",
    )
    warnings_as_errors: bool = Field(
        False,
        description="refuse (422) what is otherwise answered with a warning: unusual values and answers, and "
        "values outside a channel's physical bounds",
    )
    max_num_samples: int = Field(256, ge=0, description="most sampled trajectories a request may ask for")
    num_samples: int = Field(
        32, ge=1, le=4096, description="latent samples behind means and quantiles (Sobol draws; see README)"
    )
    # accuracy on demand: a request may set its solver's tolerance within these bounds
    min_rtol: float = Field(1e-7, gt=0, lt=1, description="tightest relative tolerance a request may ask for")
    max_rtol: float = Field(0.1, gt=0, lt=1, description="loosest relative tolerance a request may ask for")
    min_atol: float = Field(1e-9, gt=0, lt=1, description="tightest absolute tolerance a request may ask for")
    max_atol: float = Field(0.1, gt=0, lt=1, description="loosest absolute tolerance a request may ask for")
    max_solver_steps: int = Field(
        2000, ge=1, le=10**6, description="step budget of every solve, whatever the tolerance (a 422 beyond)"
    )

    request_timeout_s: float = Field(
        30.0, gt=0, description="deadline per request, from its arrival: 504 past it, and its solve stops"
    )

    # the event loop and the connections (uvicorn)
    offload_bytes: int = Field(
        256 * 1024,
        ge=0,
        description="bodies over this size are decoded in a decode process (LATENTCAST_DECODE_PROCESSES), and "
        "answers that could exceed it encoded on a worker thread, so /healthz and small requests never wait behind "
        "them",
    )
    max_heavy_requests: int = Field(2, ge=1, description="offloaded decodes/encodes at a time (bounds their memory)")
    decode_processes: int = Field(
        1,
        ge=0,
        le=64,
        description="worker processes that decode bodies over LATENTCAST_OFFLOAD_BYTES and compressed ones, so "
        "their parsing never holds this process's GIL (each imports the package: ~300 MB); 0: on a thread here",
    )
    body_timeout_s: float = Field(30.0, gt=0, description="time to receive a whole body; 408 past it")
    header_timeout_s: float = Field(10.0, gt=0, description="time to receive a request's headers; closed past it")
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="request line + headers; 431 beyond")
    keep_alive_s: float = Field(5.0, gt=0, description="idle time before a keep-alive connection is closed")
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a client that takes none of its answer's bytes for this long is disconnected, and the unsent "
        "answer freed (a client that never reads would hold the answer's memory and the connection forever)",
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="connections + requests at once; at the limit a new request takes the place of an idle or "
        "header-less connection (else the slowest body upload), and is answered 503 only if none is",
    )
    shutdown_grace_s: float = Field(
        20.0, gt=0, description="on SIGTERM, time for requests in flight to finish before connections close"
    )

    api_key: SecretStr | None = Field(
        None, description="if set, /forecast and /models need it (X-API-Key), and /docs and /metrics unless opened"
    )
    open_docs: bool = Field(False, description="with an API key: serve /docs and /openapi.json without it")
    open_metrics: bool = Field(False, description="with an API key: serve /metrics without it")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value: object) -> object:
        return None if value == "" else value  # LATENTCAST_API_KEY= (empty, as compose passes it) = no key

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for old, new in RENAMED.items():
            if os.environ.get(old) is not None:
                raise ValueError(
                    f"{old} is now {new}: unusual values are answered with a warning, and "
                    "LATENTCAST_WARNINGS_AS_ERRORS=true refuses them"
                )
        if self.api_key is not None:
            key = self.api_key.get_secret_value()
            if len(key) < 16:
                raise ValueError("LATENTCAST_API_KEY must be at least 16 characters")
            if key != key.strip() or not key.isprintable():
                raise ValueError(
                    "LATENTCAST_API_KEY has whitespace at an end or a control character (a newline from a secret "
                    "file?): no request could present it; remove it"
                )
        for path in self.models:
            if not path.is_file():
                raise ValueError(f"LATENTCAST_MODELS: {path} is not a file")
        if not self.models and not ModelBundle.embedded():
            raise ValueError("no models: set LATENTCAST_MODELS or ship checkpoints in the package's models/embedded/")
        return self

    @property
    def model_paths(self) -> list[Path]:
        return list(self.models) or ModelBundle.embedded()


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
