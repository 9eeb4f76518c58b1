"""What the app holds between requests."""

from __future__ import annotations

import dataclasses

from service.batching import Batcher
from service.config import Settings
from service.metrics import Metrics
from service.registry import ServedModel


@dataclasses.dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    models: dict[str, ServedModel] = dataclasses.field(default_factory=dict)
    default: str = ""
    batcher: Batcher | None = None
    ready: bool = False
    failure: str | None = None
