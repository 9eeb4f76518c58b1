"""Forecast a whole long table on a Ray cluster (`pip install 'latentcast[ray]'`).

    from latentcast.batch import forecast_table

    summary = forecast_table("obs/", "out/", "pbcseq", query_times=[4000.0, 4200.0])
    # out/forecasts/*.parquet: id, time, channel, point, mean, q0.1, …  (as `Model.predict` returns)
    # out/errors/*.parquet:    id, field, msg        (the series refused, as `on_error="skip"` lists them)
    # out/warnings/*.parquet:  id, field, msg, kind  (what was unusual, as `attrs["warnings"]`)

How it runs, on Ray Data (no scheduler of our own):
1. `input` (a parquet file or directory, or a `ray.data.Dataset`) is read as Ray blocks. Query times
   given as a table (a path or a Dataset with columns id, time) are tagged and put beside the rows.
2. The rows are hash-partitioned on the id column (`Dataset.repartition(keys=[id], sort=True)`, Ray's
   hash shuffle): every row of one series, observation or query, lands in one block, wherever it was in
   the input files. This is the one all-to-all step; it moves each row once (through the object store,
   spilled to disk when it is larger than memory), as Ray's own `groupby().map_groups()` does.
3. `map_batches` runs a callable class on `concurrency` actors: each loads the model once, takes whole
   blocks (`batch_size=None`, so no series is split), and forecasts them `series_per_batch` series at a
   time with `Model.predict(on_error="skip")`: the same numbers as `Model.predict` and `POST /forecast`.
   `num_gpus` gives each actor a GPU.
4. The answers are materialized once and written as three parquet directories.

A refused series never fails the job (the policy is always on_error="skip"): it is listed in `errors`, and
the other series are answered; so is a series the query times leave out. A second run into the same
`output` replaces the three directories; an empty one holds an empty file with the columns.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from latentcast.frames import quantile_column

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

QUERY = "__latentcast_query__"  # marks the rows of a query-times table beside the observations
KIND = "__latentcast_kind__"  # what an output row is: a forecast, a refused series or a warning
FORECAST, ERROR, WARNING = 0, 1, 2


def reserved_cpus(cpus: float) -> float:
    """The CPUs the actors must leave free: one for Ray's read and shuffle tasks (1 CPU each) and the
    hash shuffle's aggregators (up to a quarter of the cluster, `ray.data` hash_shuffle.py)."""
    return 1.0 + 0.25 * cpus


ROWS_PER_PARTITION = 200_000  # input rows per hash partition (a block an actor takes at once)


@dataclasses.dataclass(frozen=True)
class BatchSummary:
    """What a `forecast_table` run did: series answered and refused, rows written, wall time."""

    series: int
    answered: int
    refused: int
    rows: int
    warnings: int
    seconds: float
    output: str | Path | None

    @property
    def series_per_second(self) -> float:
        return self.series / self.seconds if self.seconds > 0 else math.inf

    def __str__(self) -> str:
        return (
            f"{self.series:,} series ({self.answered:,} answered, {self.refused:,} refused), "
            f"{self.rows:,} forecast rows, {self.warnings:,} warnings, in {self.seconds:.1f} s "
            f"({self.series_per_second:,.0f} series/s)"
        )


class Scorer:
    """The callable class `map_batches` runs: the model is loaded once per actor; each call forecasts
    one block (whole series) and returns its forecasts, refusals and warnings as one frame (`KIND`)."""

    def __init__(
        self,
        model: str,
        device: str,
        model_options: Mapping[str, Any],
        query_times: Sequence[Any] | Mapping[Any, Sequence[Any]] | None,
        predict_options: Mapping[str, Any],
        id_col: str,
        time_col: str,
        series_per_batch: int,
        datetime_times: bool,
    ):
        import latentcast

        self.model = latentcast.load(model, device=device, **model_options)
        self.listed: list[Any] | None = None  # one list for every series
        self.by_id: dict[str, list[Any]] = {}  # or id (as text) → its query times
        if isinstance(query_times, Mapping):
            self.by_id = {str(k): list(v) for k, v in query_times.items()}
        elif query_times is not None:
            self.listed = list(query_times)
        self.options = dict(predict_options)
        self.id_col, self.time_col = id_col, time_col
        self.series_per_batch = series_per_batch
        self.datetime_times = datetime_times

    def __call__(self, rows: pa.Table) -> pd.DataFrame:
        from latentcast.frames import LatentcastWarning

        block = rows.to_pandas()  # numpy-backed columns, as a user's frame has them
        by_id, parts = self.by_id, []
        obs = block
        if QUERY in block.columns:
            is_query = block[QUERY].to_numpy(dtype=bool)
            queries = block.loc[is_query]
            obs = block.loc[~is_query].drop(columns=[QUERY])
            by_id = {str(k): g[self.time_col].tolist() for k, g in queries.groupby(queries[self.id_col].astype(str))}
            seen = set(obs[self.id_col].astype(str))
            orphans = [k for k in pd.unique(queries[self.id_col]) if str(k) not in seen]
            msg = "query times for an id with no observations: not forecast"
            parts.append(self._issues([{"id": k, "field": "query_times", "msg": msg} for k in orphans], WARNING))
        # each series' rows, found once: a chunk is a slice of them, not a scan of the block
        codes, ids = pd.factorize(obs[self.id_col])
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(ids) + 1))
        wanted = np.arange(len(ids))
        if self.listed is None:
            asked = np.array([str(i) in by_id for i in ids], dtype=bool)
            msg = "no query time for this series"
            unasked = [{"id": ids[k], "field": "query_times", "msg": msg} for k in np.flatnonzero(~asked)]
            parts.append(self._issues(unasked, ERROR))
            wanted = wanted[asked]
        for start in range(0, len(wanted), self.series_per_batch):
            chunk = wanted[start : start + self.series_per_batch]
            rows = np.concatenate([order[bounds[k] : bounds[k + 1]] for k in chunk])
            query: Any = self.listed if self.listed is not None else {str(ids[k]): by_id[str(ids[k])] for k in chunk}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LatentcastWarning)  # listed in attrs["warnings"]
                fc = self.model.predict(
                    obs.iloc[np.sort(rows)],
                    query,
                    id_col=self.id_col,
                    time_col=self.time_col,
                    on_error="skip",
                    **self.options,
                )
            parts.append(fc.assign(**{KIND: FORECAST}))
            parts.append(self._issues(fc.attrs.get("errors", []), ERROR))
            parts.append(self._issues(fc.attrs.get("warnings", []), WARNING))
        kept = [p for p in parts if len(p)]
        return self._typed(pd.concat(kept, ignore_index=True) if kept else pd.DataFrame())

    def _issues(self, issues: Sequence[Mapping[str, Any]], kind: int) -> pd.DataFrame:
        if not issues:
            return pd.DataFrame()
        out = pd.DataFrame(
            {
                self.id_col: [x.get("id") for x in issues],
                "field": [str(x.get("field", "")) for x in issues],
                "msg": [str(x.get("msg", "")) for x in issues],
                "issue": [str(x.get("kind", "")) for x in issues],
            }
        )
        return out.assign(**{KIND: kind})

    def _typed(self, out: pd.DataFrame) -> pd.DataFrame:
        """Every block the same schema, whatever it holds: forecast columns as floats (NaN on refusal
        rows), the time as the input's kind, the issue columns as strings."""
        columns = [self.id_col, self.time_col, "channel", "point", "mean"]
        columns += [quantile_column(lv) for lv in self.options["quantiles"]]
        for col in [*columns, "field", "msg", "issue", KIND]:
            if col not in out.columns:
                out[col] = np.nan
        if self.datetime_times:
            out[self.time_col] = pd.to_datetime(out[self.time_col], utc=True)
        else:
            out[self.time_col] = out[self.time_col].astype(np.float64)
        for col in ("channel", "field", "msg", "issue"):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
        for col in columns[3:]:
            out[col] = out[col].astype(np.float64)
        out[KIND] = out[KIND].astype(np.int8)
        return out[[*columns, "field", "msg", "issue", KIND]]


def forecast_table(
    input: str | Path | ray.data.Dataset,
    output: str | Path | None,
    model: str | Path,
    query_times: Sequence[Any] | Mapping[Any, Sequence[Any]] | str | Path | ray.data.Dataset,
    *,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    id_col: str = "id",
    time_col: str = "time",
    series_per_batch: int = 256,
    concurrency: int = 1,
    num_cpus: float | None = None,
    num_gpus: float = 0.0,
    device: str | None = None,
    num_samples: int = 32,
    solver: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    extra_columns: str = "error",
    partitions: int | None = None,
    address: str | None = None,
    progress: bool = True,
) -> tuple[BatchSummary, dict[str, ray.data.Dataset]]:
    """Forecast every series of a long table on Ray Data; write `output`/{forecasts,errors,warnings}/
    as parquet (None: write nothing, e.g. to read the returned datasets).

    query_times: one list for every series, a mapping id → list, or a table with columns id, time (a
    parquet path or a Dataset), joined on the id column. concurrency: actors, each loading the model
    once; num_cpus, num_gpus: what each actor reserves (device then defaults to "cuda" with GPUs, else
    "cpu"). The actors must leave `reserved_cpus` of the cluster to the tasks that read and shuffle (Ray
    waits forever otherwise); num_cpus defaults to 1 or, on a small cluster, what leaves them that. partitions: hash
    partitions of the id column (default: one per ROWS_PER_PARTITION input rows, at least 2 per actor).
    address: the cluster to join ("auto", "ray://…"; None: the one this process started, or a local
    one). progress: Ray Data's progress bars (drawn by rich). Returns a summary and the materialized
    datasets ("forecasts", "errors", "warnings").
    """
    import ray
    import ray.data
    from ray.data.expressions import col

    levels = tuple(float(q) for q in quantiles)
    if series_per_batch < 1 or concurrency < 1 or (num_cpus is not None and num_cpus <= 0) or num_gpus < 0:
        raise ValueError("series_per_batch and concurrency must be ≥ 1, num_cpus > 0 and num_gpus ≥ 0")
    if not ray.is_initialized():  # a local cluster listens on the loopback interface only
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    spare = cpus - reserved_cpus(cpus)
    if num_cpus is None:
        num_cpus = min(1.0, math.floor(20 * spare / concurrency) / 20)
    if num_cpus <= 0 or concurrency * num_cpus > spare + 1e-9:
        raise ValueError(
            f"{concurrency} actors × {num_cpus:g} CPU leave less than {reserved_cpus(cpus):g} of the cluster's "
            f"{cpus:g} CPUs to reading and shuffling (the job would wait forever): lower concurrency or num_cpus"
        )
    ctx = ray.data.DataContext.get_current()
    ctx.shuffle_strategy = ray.data.context.ShuffleStrategy.HASH_SHUFFLE
    ctx.enable_progress_bars = progress
    ctx.enable_rich_progress_bars, ctx.use_ray_tqdm = progress, False
    t0 = time.perf_counter()
    obs = _dataset(input, "input")
    names = obs.schema().names
    for name in (id_col, time_col):
        if name not in names:
            raise ValueError(f"input: no column {name!r} (columns: {names})")
    datetime_times = _is_datetime(obs, time_col)
    rows = obs.count()  # the observations alone: parquet metadata, before the query rows join them
    table: ray.data.Dataset | None = None
    listed: Sequence[Any] | Mapping[Any, Sequence[Any]] | None = None
    if isinstance(query_times, (str, Path)) or hasattr(query_times, "schema"):
        table = _dataset(query_times, "query_times")
        table = table.select_columns([id_col, time_col])
        fill = {c: None for c in names if c not in (id_col, time_col)}
        tag = functools.partial(_tag_queries, fill=fill, order=names)
        table = table.map_batches(tag, batch_format="pandas")
        obs = obs.map_batches(_tag_obs, batch_format="pandas").union(table)
    else:
        listed = query_times
        if isinstance(listed, str) or not isinstance(listed, Sequence | np.ndarray | Mapping):
            raise ValueError("query_times: a list, a mapping id → list, or a table (path or Dataset) of id, time")
    n_parts = partitions or max(2 * concurrency, math.ceil(rows / ROWS_PER_PARTITION))
    grouped = obs.repartition(n_parts, keys=[id_col], sort=True)
    options = {
        "quantiles": levels,
        "solver": solver,
        "rtol": rtol,
        "atol": atol,
        "extra_columns": extra_columns,
    }
    scored = grouped.map_batches(
        Scorer,
        batch_size=None,  # whole blocks: a series is never split
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
        fn_constructor_kwargs={
            "model": str(model),
            "device": device or ("cuda" if num_gpus else "cpu"),
            "model_options": {"num_samples": num_samples},
            "query_times": listed,
            "predict_options": options,
            "id_col": id_col,
            "time_col": time_col,
            "series_per_batch": series_per_batch,
            "datetime_times": datetime_times,
        },
    ).materialize()
    forecast_cols = [id_col, time_col, "channel", "point", "mean", *[quantile_column(lv) for lv in levels]]
    kind = col(KIND)
    columns = {
        "forecasts": (FORECAST, forecast_cols),
        "errors": (ERROR, [id_col, "field", "msg"]),
        "warnings": (WARNING, [id_col, "field", "msg", "issue"]),
    }
    parts = {name: scored.filter(expr=kind == k).select_columns(cols) for name, (k, cols) in columns.items()}
    parts = {k: v.materialize() for k, v in parts.items()}
    counts = {k: v.count() for k, v in parts.items()}
    if output is not None:  # replaced, not appended to, on a second run; an empty part is an empty file
        for name, ds in parts.items():
            where = f"{str(output).rstrip('/')}/{name}"
            ds.write_parquet(where, mode=ray.data.SaveMode.OVERWRITE)
            if counts[name] == 0 and "://" not in where:
                Path(where).mkdir(parents=True, exist_ok=True)
                pd.DataFrame(columns=columns[name][1]).to_parquet(Path(where) / "empty.parquet", index=False)
    answered = len(parts["forecasts"].unique(id_col)) if counts["forecasts"] else 0
    refused = len(parts["errors"].unique(id_col)) if counts["errors"] else 0
    summary = BatchSummary(
        series=answered + refused,
        answered=answered,
        refused=refused,
        rows=counts["forecasts"],
        warnings=counts["warnings"],
        seconds=time.perf_counter() - t0,
        output=output,
    )
    return summary, parts


def _dataset(source: Any, what: str) -> ray.data.Dataset:
    import ray.data

    if hasattr(source, "schema") and hasattr(source, "map_batches"):
        return source
    if "://" in str(source):  # s3://, gs://, abfs://, …: Ray reads it through pyarrow's file systems
        return ray.data.read_parquet(str(source))
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist (a parquet file or directory, or a ray Dataset)")
    return ray.data.read_parquet(str(path))


def _is_datetime(ds: ray.data.Dataset, col: str) -> bool:
    import pyarrow as pa

    schema = ds.schema()
    arrow = schema.base_schema if hasattr(schema, "base_schema") else None
    if isinstance(arrow, pa.Schema):
        return bool(pa.types.is_timestamp(arrow.field(col).type))
    return "datetime" in str(dict(zip(schema.names, schema.types, strict=True))[col])


def _tag_obs(batch: pd.DataFrame) -> pd.DataFrame:
    return batch.assign(**{QUERY: False})


def _tag_queries(batch: pd.DataFrame, fill: Mapping[str, Any], order: Sequence[str]) -> pd.DataFrame:
    out = batch.assign(**dict.fromkeys(fill, np.nan), **{QUERY: True})
    return out[[*order, QUERY]]
