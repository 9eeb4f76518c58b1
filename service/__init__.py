"""latentcast.service: the forecasting HTTP API (FastAPI on uvicorn). Needs `latentcast[serve]`.

The public surface: `Settings` (every knob, from LATENTCAST_* variables), `create_app`, `server` (run it
under uvicorn), `load_models` (checkpoints → the served models, as the server loads them), `tune_gc`
(the collector setting the server makes after warm-up), and `formats` (the wire formats and the types
they read and write).
"""

from latentcast.service import formats, server
from latentcast.service.config import Settings
from latentcast.service.main import create_app
from latentcast.service.registry import load_models
from latentcast.service.runtime import tune_gc

__all__ = ["Settings", "create_app", "formats", "load_models", "server", "tune_gc"]
