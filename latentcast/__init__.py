"""latentcast: forecasts for irregularly sampled, partly missing time series, with latent ODEs.

    import latentcast
    model = latentcast.load("pbcseq")                     # an embedded model or a checkpoint path
    fc = model.predict(obs, query_times=["2027-01-01"])   # long frame in, long frame out
    model = latentcast.fit(obs, channels=["hr", "bp"], time_unit="hour")
    model.save("runs/mine/model.pt")

The names below load on first use, so `import latentcast.client` (the HTTP client) never imports
torch. Subpackages: `latentcast.models` (the model, training, checkpoints), `latentcast.service` (the
HTTP API; `pip install latentcast[serve]`), `latentcast.client` (`latentcast[client]`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from latentcast.api import Model, Refused, SolverFailed, fit, load
    from latentcast.frames import DataError, LatentcastWarning, read_long_table

_LAZY = {
    "Model": "latentcast.api",
    "SolverFailed": "latentcast.api",
    "Refused": "latentcast.api",
    "LatentcastWarning": "latentcast.frames",
    "read_long_table": "latentcast.frames",
    "fit": "latentcast.api",
    "load": "latentcast.api",
    "DataError": "latentcast.frames",
}

__all__ = [
    "DataError",
    "LatentcastWarning",
    "Model",
    "Refused",
    "SolverFailed",
    "__version__",
    "fit",
    "load",
    "read_long_table",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentcast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
