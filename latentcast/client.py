"""The HTTP client: a pandas long table in, a long table of forecasts out. Imports no torch or FastAPI
(`pip install latentcast[client]`).

    from latentcast.client import LatentcastClient
    client = LatentcastClient("http://127.0.0.1:8000")
    obs = pd.read_csv("obs.csv")                       # id, time, one column per channel
    fc = client.forecast(obs, query_times=["2027-01-01", "2027-06-01"], model="pbcseq")
    fc.head()                                          # id, time, channel, mean, q0.1, q0.5, q0.9

The table ↔ arrays step is `latentcast.frames`, the same as the in-process API's; bodies travel as
Arrow IPC streams (`latentcast.arrowio`), or JSON with transport="json".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import httpx
import numpy as np
import pandas as pd

from latentcast.arrowio import MEDIA_TYPE, encode_request, read_stream, time_array
from latentcast.frames import (
    DataError,
    FlatTable,
    QueryTimes,
    Times,
    from_frame,
    note_solver,
    query_table,
    read_long_table,
    to_frame,
)

__all__ = ["DataError", "LatentcastClient", "LatentcastError", "read_long_table"]


class LatentcastError(RuntimeError):
    """The server answered an error; `status` and `detail` are what it said."""

    def __init__(self, status: int, detail: str, body: Any = None):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body


class LatentcastClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0, chunk_series: int = 1000):
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.chunk_series = chunk_series

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LatentcastClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise(self, r: httpx.Response) -> None:
        try:
            body = r.json()
            detail = body.get("detail", r.text)
        except ValueError:
            body, detail = None, r.text
        raise LatentcastError(r.status_code, str(detail), body)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self._http.request(method, path, **kw)
        if r.status_code != 200:
            self._raise(r)
        return r.json()

    def models(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = self._call("GET", "/models")["models"]
        return models

    def model_info(self, model: str | None = None) -> dict[str, Any]:
        for m in self.models():
            if (model is None and m["default"]) or m["name"] == model:
                return m
        raise LatentcastError(404, f"unknown model {model!r}")

    def forecast_raw(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /forecast with a request body as documented; the response as parsed JSON."""
        out: dict[str, Any] = self._call("POST", "/forecast", json=body)
        return out

    def forecast(
        self,
        frame: pd.DataFrame,
        query_times: QueryTimes,
        model: str | None = None,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        id_col: str = "id",
        time_col: str = "time",
        transport: Literal["arrow", "json"] = "arrow",
        solver: Literal["fast", "default", "precise"] | None = None,
        rtol: float | None = None,
        atol: float | None = None,
    ) -> pd.DataFrame:
        """Forecast every series of a long table.

        query_times: one list for every series, a mapping id → list, or a table with columns id, time.
        Times are numbers (the model's time unit) or date-times, like the table's `time` column.
        Channels are the model's (GET /models); a channel missing from the table is sent as not
        observed. Returns a long table with columns id (as in the table), time (numbers, or UTC
        timestamps), channel, mean and one column per quantile (q0.1, …). `transport`: Arrow IPC
        bodies (default) or JSON. solver, rtol, atol: the solve's accuracy (the request's `"solver"`
        field); `attrs["solver"]` of the answer says what the server used, `attrs["nfe"]` what it cost
        (series id → vector-field evaluations per trajectory).
        """
        info = self.model_info(model)
        channels: list[str] = info["channels"]
        table = from_frame(frame, channels, id_col, time_col)
        queries, q_off = query_table(table, query_times, id_col, time_col)
        levels = [float(q) for q in quantiles]
        accuracy = {k: v for k, v in (("level", solver), ("rtol", rtol), ("atol", atol)) if v is not None}
        parts: list[_Part] = []
        for a in range(0, len(table), self.chunk_series):
            z = min(a + self.chunk_series, len(table))
            send = self._arrow if transport == "arrow" else self._json
            parts.append(send(info["name"], table, queries, q_off, a, z, levels, accuracy))
        mean = np.concatenate([p.mean for p in parts])
        quant = np.concatenate([p.quantiles for p in parts], axis=1)
        out = to_frame(table.keys, q_off, queries, channels, mean, quant, levels, id_col, time_col)
        used = parts[0].solver if parts else {}
        return note_solver(out, used, table.keys, np.concatenate([p.nfe for p in parts]) if parts else np.zeros(0))

    def _arrow(
        self,
        name: str,
        table: FlatTable,
        queries: Times,
        q_off: np.ndarray,
        a: int,
        z: int,
        levels: list[float],
        accuracy: dict[str, Any],
    ) -> _Part:
        """Series a:z as one Arrow request → their forecasts."""
        o, qo = table.offsets[a : z + 1], q_off[a : z + 1]
        body = encode_request(
            table.ids[a:z],
            time_array(table.times.values[o[0] : o[-1]], table.times.is_datetime),
            o - o[0],
            table.values[o[0] : o[-1]],
            time_array(queries.values[qo[0] : qo[-1]], queries.is_datetime),
            qo - qo[0],
        )
        params = {"model": name, "quantiles": ",".join(repr(q) for q in levels)}
        params.update({"solver" if k == "level" else k: str(v) for k, v in accuracy.items()})
        r = self._http.post(
            "/forecast", content=body, params=params, headers={"content-type": MEDIA_TYPE, "accept": MEDIA_TYPE}
        )
        if r.status_code != 200:
            self._raise(r)
        long = read_stream(r.content)
        d = table.values.shape[1]
        mean = long.column("mean").to_numpy().reshape(-1, d)
        quant = np.stack([long.column(f"q{q:g}").to_numpy().reshape(-1, d) for q in levels])
        first_rows = (qo[:-1] - qo[0]) * d  # each series' first row
        nfe = long.column("nfe").to_numpy()[first_rows].astype(np.float64)
        solver = json.loads((long.schema.metadata or {}).get(b"latentcast.solver", b"{}"))
        return _Part(mean, quant, nfe, solver)

    def _json(
        self,
        name: str,
        table: FlatTable,
        queries: Times,
        q_off: np.ndarray,
        a: int,
        z: int,
        levels: list[float],
        accuracy: dict[str, Any],
    ) -> _Part:
        """Series a:z as one JSON request → their forecasts."""
        series = []
        for i in range(a, z):
            o0, o1, q0, q1 = table.offsets[i], table.offsets[i + 1], q_off[i], q_off[i + 1]
            vals = table.values[o0:o1]
            series.append(
                {
                    "id": table.ids[i],
                    "timestamps": _wire_times(table.times, o0, o1),
                    "values": [[None if np.isnan(v) else float(v) for v in row] for row in vals],
                    "query_times": _wire_times(queries, q0, q1),
                }
            )
        body: dict[str, Any] = {"model": name, "series": series, "quantiles": levels}
        if accuracy:
            body["solver"] = accuracy
        resp = self.forecast_raw(body)
        mean = np.concatenate([np.asarray(f["mean"], dtype=np.float64) for f in resp["forecasts"]])
        quant = np.stack(
            [
                np.concatenate([np.asarray(f["quantiles"][repr(q)], dtype=np.float64) for f in resp["forecasts"]])
                for q in levels
            ]
        )
        nfe = np.asarray([f["nfe"] for f in resp["forecasts"]], dtype=np.float64)
        return _Part(mean, quant, nfe, resp["solver"])


class _Part(NamedTuple):
    """One request's forecasts: mean (M, D), quantiles (L, M, D), nfe (B,), the solver it used."""

    mean: np.ndarray
    quantiles: np.ndarray
    nfe: np.ndarray
    solver: dict[str, Any]


def _wire_times(times: Times, a: int, z: int) -> list[float | str]:
    """Times a:z as JSON wants them: numbers, or ISO-8601 strings (UTC)."""
    if not times.is_datetime:
        return [float(v) for v in times.values[a:z]]
    return [ts.isoformat() for ts in Times(times.values[a:z], True).as_column()]
