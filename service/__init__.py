"""latentcast.service: the forecasting HTTP API (FastAPI + uvicorn) and its Python client."""

from service.client import LatentcastClient
from service.config import Settings
from service.main import create_app

__all__ = ["LatentcastClient", "Settings", "create_app"]
