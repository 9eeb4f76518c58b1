"""Python client: a pandas long table in, a long table of forecasts out.

client = LatentcastClient("http://127.0.0.1:8000")
obs = pd.read_csv("obs.csv")                       # id, time, one column per channel
fc = client.forecast(obs, query_times=["2027-01-01", "2027-06-01"], model="pbcseq")
fc.head()                                          # id, time, channel, mean, q0.1, q0.5, q0.9

Bodies travel as Arrow IPC streams (service/arrow.py); transport="json" sends the JSON body instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
import numpy as np
import pandas as pd

from models.packed import offsets
from service.arrow import MEDIA_TYPE, decode, encode


class LatentcastError(RuntimeError):
    """The server answered an error; `status` and `detail` are what it said."""

    def __init__(self, status: int, detail: str, body: Any = None):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body


def _times(values: pd.Series | Sequence[Any]) -> list[float | str]:
    col = pd.Series(values)
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return [float(v) for v in col]
    stamps = pd.to_datetime(col, utc=True, format="ISO8601" if col.dtype == object else None)
    return [ts.isoformat() for ts in stamps]


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
        query_times: Sequence[Any] | Mapping[Any, Sequence[Any]],
        model: str | None = None,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        id_col: str = "id",
        time_col: str = "time",
        transport: Literal["arrow", "json"] = "arrow",
    ) -> pd.DataFrame:
        """Forecast every series of a long table.

        query_times: one list for every series, or a mapping id → list. Times are numbers (the model's
        time unit) or date-times, like the table's `time` column. Channels are the model's (GET /models);
        a channel missing from the table is sent as not observed. Returns a long table with columns
        id, time, channel, mean and one column per quantile (q0.1, …). `transport`: Arrow IPC bodies
        (default; the time column comes back as UTC timestamps for date-times) or JSON (ISO strings).
        """
        info = self.model_info(model)
        channels: list[str] = info["channels"]
        unknown = [c for c in frame.columns if c not in (id_col, time_col, *channels)]
        if len(unknown) == len(frame.columns) - 2 and unknown:
            raise ValueError(f"none of the model's channels {channels} is in the table (it has {unknown})")
        if transport == "json":
            return self._forecast_json(frame, query_times, info, quantiles, id_col, time_col)
        frame = frame.sort_values([id_col, time_col], kind="stable")
        codes, uniques = pd.factorize(frame[id_col], sort=False)
        counts = np.bincount(codes, minlength=len(uniques))
        offs = offsets(counts)
        times = _time_array(frame[time_col])
        values = frame.reindex(columns=channels).to_numpy(dtype=np.float64)
        qs = [list(query_times[sid] if isinstance(query_times, Mapping) else query_times) for sid in uniques]
        q_counts = np.array([len(q) for q in qs], dtype=np.int64)
        q_off = offsets(q_counts)
        q_flat = _time_array(pd.Series([t for q in qs for t in q]))
        ids = [str(u) for u in uniques]
        params = {"model": info["name"], "quantiles": ",".join(repr(float(q)) for q in quantiles)}
        parts = []
        for a in range(0, len(ids), self.chunk_series):
            z = min(a + self.chunk_series, len(ids))
            o, qo = offs[a : z + 1], q_off[a : z + 1]
            body = encode(
                ids[a:z], times[o[0] : o[-1]], o - o[0], values[o[0] : o[-1]], q_flat[qo[0] : qo[-1]], qo - qo[0]
            )
            r = self._http.post(
                "/forecast", content=body, params=params, headers={"content-type": MEDIA_TYPE, "accept": MEDIA_TYPE}
            )
            if r.status_code != 200:
                self._raise(r)
            parts.append(decode(r.content).to_pandas())
        out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return out.rename(columns={"id": id_col, "time": time_col})

    def _forecast_json(
        self,
        frame: pd.DataFrame,
        query_times: Sequence[Any] | Mapping[Any, Sequence[Any]],
        info: dict[str, Any],
        quantiles: Sequence[float],
        id_col: str,
        time_col: str,
    ) -> pd.DataFrame:
        channels: list[str] = info["channels"]
        series = []
        for sid, part in frame.sort_values([id_col, time_col]).groupby(id_col, sort=False):
            vals = part.reindex(columns=channels).to_numpy(dtype=np.float64)
            q = query_times[sid] if isinstance(query_times, Mapping) else query_times
            series.append(
                {
                    "id": str(sid),
                    "timestamps": _times(part[time_col]),
                    "values": [[None if np.isnan(v) else float(v) for v in row] for row in vals],
                    "query_times": _times(list(q)),
                }
            )
        rows = []
        for start in range(0, len(series), self.chunk_series):
            body = {
                "model": info["name"],
                "series": series[start : start + self.chunk_series],
                "quantiles": list(quantiles),
            }
            rows.extend(_long_rows(self.forecast_raw(body), quantiles))
        cols = [id_col, time_col, "channel", "mean", *[f"q{q:g}" for q in quantiles]]
        return pd.DataFrame(rows, columns=cols)


def _time_array(col: pd.Series) -> np.ndarray:
    """Numbers → float64; anything else → UTC datetime64[ns] (naive times are taken as UTC)."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=np.float64)
    stamps = pd.to_datetime(col, utc=True, format="ISO8601" if col.dtype == object else None)
    return stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def _long_rows(resp: dict[str, Any], quantiles: Sequence[float]) -> list[list[Any]]:
    channels = resp["channels"]
    rows = []
    for f in resp["forecasts"]:
        for k, t in enumerate(f["query_times"]):
            for j, c in enumerate(channels):
                rows.append(
                    [
                        f["id"],
                        t,
                        c,
                        f["mean"][k][j],
                        *[f["quantiles"][repr(float(q))][k][j] for q in quantiles],
                    ]
                )
    return rows
