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

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Literal

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
    note_outcome,
    note_solver,
    offsets,
    quantile_column,
    query_table,
    read_long_table,
    table_inputs,
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
        served = self.models()
        for m in served:
            if (model is None and m["default"]) or m["name"] == model:
                return m
        raise LatentcastError(404, f"unknown model {model!r}; served: {sorted(m['name'] for m in served)}")

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
        on_error: Literal["raise", "skip"] = "raise",
        extra_columns: Literal["error", "ignore"] = "error",
    ) -> pd.DataFrame:
        """Forecast every series of a long table.

        query_times: one list for every series, a mapping id → list, or a table with columns id, time.
        Times are numbers (the model's time unit) or date-times, like the table's `time` column.
        Channels are the model's (GET /models); a channel missing from the table is sent as not
        observed (and named in a warning); another column is a DataError unless extra_columns="ignore".
        Returns a long table with columns id (as in the table), time
        (numbers, or UTC timestamps), channel, mean and one column per quantile (q0.1, …). `transport`:
        Arrow IPC bodies (default) or JSON. solver, rtol, atol: the solve's accuracy (the request's
        `"solver"` field); `attrs["solver"]` of the answer says what the server used, `attrs["nfe"]` what
        it cost (series id → vector-field evaluations per trajectory). on_error: "raise" (the server's
        422 listing every refused series becomes a `LatentcastError`) or "skip" (the other series are
        answered; `attrs["errors"]` lists the refused ones). `attrs["warnings"]` holds the server's
        warnings, also raised as one `LatentcastWarning`.
        """
        info = self.model_info(model)
        channels: list[str] = info["channels"]
        events, static = list(info.get("events") or []), list(info.get("static") or [])
        full = from_frame(frame, [*channels, *events, *static], id_col, time_col, extra_columns)
        queries, q_off = query_table(full, query_times, id_col, time_col)
        table, inputs = _with_inputs(full, len(channels), len(events), static)
        levels = [float(q) for q in quantiles]
        accuracy = {k: v for k, v in (("level", solver), ("rtol", rtol), ("atol", atol)) if v is not None}
        parts: list[_Part] = []
        for a in range(0, len(table), self.chunk_series):
            z = min(a + self.chunk_series, len(table))
            send = self._arrow if transport == "arrow" else self._json
            parts.append(send(info["name"], table, queries, q_off, a, z, levels, accuracy, on_error, inputs))
        answered = np.concatenate([p.answered for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        mean = np.concatenate([p.mean for p in parts]) if parts else np.zeros((0, len(channels)))
        point = np.concatenate([p.point for p in parts]) if parts else np.zeros((0, len(channels)))
        quant = np.concatenate([p.quantiles for p in parts], axis=1) if parts else np.zeros((len(levels), 0, 0))
        counts = np.diff(q_off)[answered]
        rows = np.repeat(q_off[answered] - offsets(counts)[:-1], counts) + np.arange(int(counts.sum()))
        keys = [table.keys[i] for i in answered.tolist()]
        out = to_frame(
            keys,
            offsets(counts),
            Times(queries.values[rows], queries.is_datetime),
            channels,
            point,
            mean,
            quant,
            levels,
            id_col,
            time_col,
        )
        used = parts[0].solver if parts else {}
        out = note_solver(out, used, keys, np.concatenate([p.nfe for p in parts]) if parts else np.zeros(0))
        notes = [w for p in parts for w in p.warnings]
        missing = [c for c in channels if c not in frame.columns]
        absent = [c for c in (*events, *static) if c not in frame.columns]
        if absent:
            msg = f"inputs not in the table, sent as none known: {', '.join(absent)}"
            notes.insert(0, {"id": None, "field": "columns", "msg": msg, "kind": "missing_inputs"})
        if missing:
            msg = f"channels not in the table, sent as never observed: {', '.join(missing)}"
            notes.insert(0, {"id": None, "field": "columns", "msg": msg, "kind": "missing_channels"})
        return note_outcome(out, [e for p in parts for e in p.errors], notes)

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
        on_error: str,
        inputs: _Inputs | None = None,
    ) -> _Part:
        """Series a:z as one Arrow request → their forecasts."""
        o, qo = table.offsets[a : z + 1], q_off[a : z + 1]
        wire = None
        if inputs is not None:
            eo = inputs.offsets[a : z + 1]
            ev_t = time_array(inputs.times.values[eo[0] : eo[-1]], inputs.times.is_datetime)
            wire = (ev_t, eo - eo[0], inputs.values[eo[0] : eo[-1]], inputs.static[a:z])
        body = encode_request(
            table.ids[a:z],
            time_array(table.times.values[o[0] : o[-1]], table.times.is_datetime),
            o - o[0],
            table.values[o[0] : o[-1]],
            time_array(queries.values[qo[0] : qo[-1]], queries.is_datetime),
            qo - qo[0],
            wire,
        )
        params = {"model": name, "quantiles": ",".join(repr(q) for q in levels), "on_error": on_error}
        params.update({"solver" if k == "level" else k: str(v) for k, v in accuracy.items()})
        r = self._http.post(
            "/forecast", content=body, params=params, headers={"content-type": MEDIA_TYPE, "accept": MEDIA_TYPE}
        )
        if r.status_code != 200:
            self._raise(r)
        long = read_stream(r.content)
        meta = long.schema.metadata or {}
        errors = json.loads(meta.get(b"latentcast.errors", b"[]"))
        answered = _answered(a, z, errors)
        d = table.values.shape[1]
        mean = long.column("mean").to_numpy().reshape(-1, d)
        names = long.schema.names
        point = long.column("point").to_numpy().reshape(-1, d) if "point" in names else mean  # an older server
        quant = np.stack([long.column(quantile_column(q)).to_numpy().reshape(-1, d) for q in levels])
        n_q = np.diff(q_off)[answered]
        first_rows = offsets(n_q)[:-1] * d  # each answered series' first row
        nfe = long.column("nfe").to_numpy()[first_rows].astype(np.float64)
        solver = json.loads(meta.get(b"latentcast.solver", b"{}"))
        warnings = json.loads(meta.get(b"latentcast.warnings", b"[]"))
        return _Part(answered, point, mean, quant, nfe, solver, _notes(table, a, warnings), _notes(table, a, errors))

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
        on_error: str,
        inputs: _Inputs | None = None,
    ) -> _Part:
        """Series a:z as one JSON request → their forecasts."""
        series = []
        for i in range(a, z):
            o0, o1, q0, q1 = table.offsets[i], table.offsets[i + 1], q_off[i], q_off[i + 1]
            vals = table.values[o0:o1]
            one: dict[str, Any] = {
                "id": table.ids[i],
                "timestamps": _wire_times(table.times, o0, o1),
                "values": [[None if np.isnan(v) else float(v) for v in row] for row in vals],
                "query_times": _wire_times(queries, q0, q1),
            }
            if inputs is not None:
                e0, e1 = inputs.offsets[i], inputs.offsets[i + 1]
                one["event_times"] = _wire_times(inputs.times, e0, e1)
                one["event_values"] = [[None if np.isnan(v) else float(v) for v in r] for r in inputs.values[e0:e1]]
                one["static"] = [None if np.isnan(v) else float(v) for v in inputs.static[i]]
            series.append(one)
        body: dict[str, Any] = {"model": name, "series": series, "quantiles": levels, "on_error": on_error}
        if accuracy:
            body["solver"] = accuracy
        resp = self.forecast_raw(body)
        d = table.values.shape[1]
        fcs = resp["forecasts"]
        mean, point = (
            np.concatenate(
                [np.asarray(f.get(k, f["mean"]), dtype=np.float64).reshape(-1, d) for f in fcs] or [np.zeros((0, d))]
            )
            for k in ("mean", "point")  # an older server sends no point
        )
        quant = np.stack(
            [
                np.concatenate(
                    [np.asarray(f["quantiles"][repr(q)], dtype=np.float64).reshape(-1, d) for f in fcs]
                    or [np.zeros((0, d))]
                )
                for q in levels
            ]
        )
        nfe = np.asarray([f["nfe"] for f in fcs], dtype=np.float64)
        warnings = [w for f in fcs for w in f.get("warnings", [])]
        errors = resp.get("errors", [])
        answered = _answered(a, z, errors)
        return _Part(
            answered, point, mean, quant, nfe, resp["solver"], _notes(table, a, warnings), _notes(table, a, errors)
        )


class _Part:
    """One request's answer: the table's indices of the answered series (B,), their point and mean (M, D),
    quantiles (L, M, D), nfe (B,), the solver it used, and its warnings and errors (id as in the table)."""

    def __init__(
        self,
        answered: np.ndarray,
        point: np.ndarray,
        mean: np.ndarray,
        quantiles: np.ndarray,
        nfe: np.ndarray,
        solver: dict[str, Any],
        warnings: list[dict[str, Any]],
        errors: list[dict[str, Any]],
    ):
        self.answered, self.point, self.mean, self.quantiles, self.nfe = answered, point, mean, quantiles, nfe
        self.solver, self.warnings, self.errors = solver, warnings, errors


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """A table's events, flat (times (K,), offsets (B + 1,), values (K, E)), and statics (B, S)."""

    times: Times
    offsets: np.ndarray
    values: np.ndarray
    static: np.ndarray


def _with_inputs(table: FlatTable, d: int, e: int, static: Sequence[str]) -> tuple[FlatTable, _Inputs | None]:
    """A table over channels, event kinds and statics → the table of its observations (channels only) and
    its inputs; a model without inputs: the table as it is."""
    if not e and not static:
        return table, None
    found = table_inputs(table, d, e, static)
    obs = table.subset(found.observed, d)
    ev = found.events
    inputs = _Inputs(
        Times(table.times.values[ev], table.times.is_datetime), found.event_offsets, table.values[ev, d : d + e],
        found.static,
    )  # fmt: skip
    return obs, inputs


def _answered(a: int, z: int, errors: list[dict[str, Any]]) -> np.ndarray:
    """The table indices of series a:z that the server answered: all but those its errors list."""
    refused = {int(e["loc"][1]) for e in errors if len(e.get("loc", ())) > 1}
    return np.asarray([a + k for k in range(z - a) if k not in refused], dtype=np.int64)


def _notes(table: FlatTable, a: int, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The server's error items in the table's terms: the series' id as in the table, its field."""
    out = []
    for e in items:
        loc = e.get("loc", [])
        key = table.keys[a + int(loc[1])] if len(loc) > 1 else None
        field = str(loc[2]) if len(loc) > 2 else "series"
        where = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[3:])
        msg = f"{where}: {e['msg']}" if len(loc) > 2 else e["msg"]
        out.append({"id": key, "field": field, "msg": msg, **({"kind": e["kind"]} if "kind" in e else {})})
    return out


def _wire_times(times: Times, a: int, z: int) -> list[float | str]:
    """Times a:z as JSON wants them: numbers, or ISO-8601 strings (UTC)."""
    if not times.is_datetime:
        return [float(v) for v in times.values[a:z]]
    return [ts.isoformat() for ts in Times(times.values[a:z], True).as_column()]
