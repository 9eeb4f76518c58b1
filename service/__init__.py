"""latentcast.service: the forecasting HTTP API (FastAPI on uvicorn). Needs `latentcast[serve]`."""

from latentcast.service import server
from latentcast.service.config import Settings
from latentcast.service.main import create_app

__all__ = ["Settings", "create_app", "server"]
