"""`latentcast serve` as a child process on 127.0.0.1: started, waited on until /readyz says ready,
stopped. For end-to-end tests, load generators and scripts that need a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python -m latentcast serve --port <free> --device <device>` with extra LATENTCAST_* variables in
    `env`. Raises RuntimeError with the server's output if it exits or is not ready within `timeout` s."""

    def __init__(self, env: dict[str, str] | None = None, device: str = "cpu", timeout: float = 180.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server; closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "latentcast", "serve", "--port", str(self.port), "--device", device],
            env={**os.environ, "LATENTCAST_LOG_LEVEL": "warning", **(env or {})},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,  # a file, not a pipe: an undrained pipe would block the server once full
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                out = self.output()
                self.stop()
                raise RuntimeError(f"server not ready within {timeout:.0f} s: {out[-2000:]}")
            time.sleep(0.2)

    def output(self) -> str:
        """What the server has written to stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
