"""The Open Inference Protocol v2 (KServe, Triton, Seldon) as a wire format of `POST /v2/models/{name}/infer`.

Irregular series travel as flat tensors with per-series counts, the layout Triton clients already
use for ragged batches (a tensor per field; the counts say where each series starts):

    inputs   series_id BYTES [B]        obs_count INT64 [B]       obs_time FP64 [N]
             obs_value FP64 [N, D]      obs_mask BOOL [N, D] (optional; false = not observed)
             query_count INT64 [B]      query_time FP64 [M]
    outputs  series_id BYTES [B']       query_count INT64 [B']    query_time FP64 [M']
             point FP32 [M', D]         mean FP32 [M', D]         quantiles FP32 [K, M', D]
             nfe FP32 [B']

B' ≤ B: with `on_error: "skip"` the refused series are left out and listed in the response's
`parameters.errors` (a JSON string; OIP parameters are scalars), as are the warnings. Times are numbers
in the model's time unit (a JSON tensor has no date-time type). Request parameters: quantiles ("0.1,0.5,
0.9"), num_samples, solver, rtol, atol, on_error, as the Arrow format's options. The tensors are turned
into the Arrow format's table and checked by the same code, so limits, refusals and answers are the same
as `/forecast`'s."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError
from latentcast.service.formats import arrow
from latentcast.service.formats import json as json_format
from latentcast.service.outcome import Outcome
from latentcast.service.validate import Job, Lookup, solver_for

MEDIA_TYPE = "application/json"
KEY = "oip-v2"  # decoded by this key (its media type is JSON's)
INPUTS: dict[str, tuple[str, int]] = {  # name → (datatype, rank)
    "series_id": ("BYTES", 1),
    "obs_count": ("INT64", 1),
    "obs_time": ("FP64", 1),
    "obs_value": ("FP64", 2),
    "obs_mask": ("BOOL", 2),
    "query_count": ("INT64", 1),
    "query_time": ("FP64", 1),
}
NUMERIC = {"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8"}
PARAMETERS = ("quantiles", "solver", "rtol", "atol", "on_error")  # no samples: an OIP answer carries none
# Triton's binary-tensor extension, which its client names in every request: the answer is JSON anyway
CLIENT_PARAMETERS = ("binary_data_output", "binary_data", "binary_data_size")


def decoded_size(body: bytes) -> int:
    return len(body)


def metadata(name: str, version: str, channels: tuple[str, ...]) -> dict[str, Any]:
    """`GET /v2/models/{name}`: the tensors a request sends and an answer holds (-1: any size)."""
    d = len(channels)
    spec = [("series_id", "BYTES", [-1]), ("obs_count", "INT64", [-1]), ("obs_time", "FP64", [-1])]
    spec += [("obs_value", "FP64", [-1, d]), ("obs_mask", "BOOL", [-1, d]), ("query_count", "INT64", [-1])]
    spec += [("query_time", "FP64", [-1])]
    out = [("series_id", "BYTES", [-1]), ("query_count", "INT64", [-1]), ("query_time", "FP64", [-1])]
    out += [("point", "FP32", [-1, d]), ("mean", "FP32", [-1, d]), ("quantiles", "FP32", [-1, -1, d])]
    out += [("nfe", "FP32", [-1])]
    return {
        "name": name,
        "versions": [version],
        "platform": "latentcast",
        "parameters": {"channels": ",".join(channels)},
        "inputs": [{"name": n, "datatype": t, "shape": s} for n, t, s in spec],
        "outputs": [{"name": n, "datatype": t, "shape": s} for n, t, s in out],
    }


def decode(body: bytes, params: Mapping[str, str], lookup: Lookup, settings: Settings) -> Job:
    """An inference request → Job (`params["model"]`: the model named in the path)."""
    doc = json_format.document(body)  # the JSON format's parse: the same 400s for what is not JSON
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ServiceError(400, "inputs: a non-empty list of tensors is required")
    opts = _parameters(doc.get("parameters"))
    model = lookup(params["model"])
    d = model.n_channels
    tensors: dict[str, np.ndarray] = {}
    for k, tensor in enumerate(inputs):
        name, array = _tensor(tensor, k, d)
        if name in tensors:
            raise ServiceError(400, f"inputs: tensor {name!r} is given twice")
        tensors[name] = array
    missing = [n for n in INPUTS if n not in tensors and n != "obs_mask"]
    if missing:
        raise ServiceError(400, f"inputs: missing tensor(s) {missing}; GET /v2/models/{model.name} lists them")
    ids, n_obs, n_q = tensors["series_id"], tensors["obs_count"], tensors["query_count"]
    b = len(ids)
    if b == 0:
        raise ServiceError(400, "series_id: shape [0]; send at least one series")
    for name, rows in (("obs_count", "obs_time"), ("query_count", "query_time")):
        counts, total = tensors[name], len(tensors[rows])
        if len(counts) != b or (counts < 0).any() or (counts > total).any():
            raise ServiceError(400, f"{name}: must hold {b} counts, one per series_id, each in [0, {total}]")
        if sum(int(c) for c in counts) != total:  # Python ints: an int64 sum could wrap
            raise ServiceError(400, f"{rows}: has {total} times but {name} sums to {sum(int(c) for c in counts)}")
    values = tensors["obs_value"]
    if len(values) != len(tensors["obs_time"]):
        raise ServiceError(400, f"obs_value: has {len(values)} rows for {len(tensors['obs_time'])} obs_time")
    mask = tensors.get("obs_mask")
    if mask is not None and mask.shape != values.shape:
        raise ServiceError(400, f"obs_mask: shape {list(mask.shape)} is not obs_value's {list(values.shape)}")
    observed = mask.astype(bool) if mask is not None else np.ones(values.shape, dtype=bool)
    flat = pa.array(values.reshape(-1), pa.float64(), mask=~observed.reshape(-1))
    rows = pa.FixedSizeListArray.from_arrays(flat, d)
    table = pa.table(
        {
            "id": pa.array([str(i) for i in ids], pa.string()),
            "timestamps": pa.ListArray.from_arrays(pa.array(_offsets(n_obs), pa.int32()), tensors["obs_time"]),
            "values": pa.ListArray.from_arrays(pa.array(_offsets(n_obs), pa.int32()), rows),
            "query_times": pa.ListArray.from_arrays(pa.array(_offsets(n_q), pa.int32()), tensors["query_time"]),
        }
    )
    level = opts.get("solver") or None
    rtol, atol = (arrow._tolerance(opts, k) for k in ("rtol", "atol"))
    solver = solver_for(model, level, rtol, atol, settings, ["parameters"])
    job = arrow._job(table, opts, model, settings, solver)
    request_id = doc.get("id")
    job.request_id = request_id if isinstance(request_id, str) else None
    return job


def answer_bytes(job: Job) -> int:
    """An upper bound on `encode`'s answer: every number at most 18 bytes (a float32's or an int64's
    shortest form and a separator), point, mean and each quantile per query time and channel, the
    query times, the ids (escaped), and the errors and warnings."""
    n_q = len(job.packed.queries)
    values = n_q * job.model.n_channels * (2 + len(job.levels))
    ids = sum(len(i.encode()) for i in job.packed.ids)
    return 18 * (values + 2 * n_q + 3 * len(job.packed)) + 2 * ids + job.notes_bytes() + 4096


def encode(job: Job, out: Outcome) -> bytes:
    """Forecasts → the inference response (outputs as above; solver, errors and warnings in parameters)."""
    fc = out.fc
    d, m, b = len(job.model.channels), int(fc.query_offsets[-1]), len(fc.ids)
    where = {lv: j for j, lv in enumerate(fc.levels)}
    quant = np.stack([fc.quantiles[where[lv]] for lv in job.levels]) if job.levels else np.zeros((0, m, d))

    def tensor(name: str, datatype: str, array: Any, shape: list[int], **parameters: str) -> dict[str, Any]:
        data = array.reshape(-1) if isinstance(array, np.ndarray) else list(array)  # float32 in its short form
        body = {"name": name, "datatype": datatype, "shape": shape, "data": data}
        return body | ({"parameters": parameters} if parameters else {})

    times = np.asarray(out.echo.as_array().to_numpy(zero_copy_only=False), dtype=np.float64)
    answer: dict[str, Any] = {
        "model_name": job.model.name,
        "model_version": job.model.version,
        "parameters": {
            "solver": json.dumps(job.solver_used.used()),
            "errors": json.dumps(out.errors),
            "warnings": json.dumps([w for ws in out.warnings for w in ws]),
        },
        "outputs": [
            tensor("series_id", "BYTES", list(fc.ids), [b]),
            tensor("query_count", "INT64", np.diff(fc.query_offsets), [b]),
            tensor("query_time", "FP64", times, [m]),
            tensor("point", "FP32", fc.point.astype(np.float32), [m, d]),
            tensor("mean", "FP32", fc.mean.astype(np.float32), [m, d]),
            tensor(
                "quantiles",
                "FP32",
                quant.astype(np.float32),
                [len(job.levels), m, d],
                levels=",".join(repr(lv) for lv in job.levels),
            ),
            tensor("nfe", "FP32", fc.nfe.astype(np.float32), [b]),
        ],
    }
    if job.request_id is not None:
        answer["id"] = job.request_id
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _parameters(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ServiceError(400, "parameters: must be an object of name → value")
    raw = {k: v for k, v in raw.items() if k not in CLIENT_PARAMETERS}
    unknown = sorted(set(raw) - set(PARAMETERS))
    if unknown:
        shown = ", ".join(_show(u, 40) for u in unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise ServiceError(400, f"parameters: {shown} unknown; the options are {list(PARAMETERS)}")
    out = {}
    for k, v in raw.items():
        if isinstance(v, list):
            v = ",".join(str(x) for x in v)
        if not isinstance(v, str | int | float) or isinstance(v, bool):
            raise ServiceError(400, f"parameters.{k}: must be a string or a number")
        out[k] = str(v)
    if out.get("on_error", "raise") not in ("raise", "skip"):
        raise ServiceError(400, f"parameters.on_error: {_show(out['on_error'])} is not one of raise, skip")
    return out


def _show(value: Any, limit: int = 80) -> str:
    """A value in an error message, cut to `limit` characters: an error never echoes a whole body."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tensor(raw: Any, k: int, d: int) -> tuple[str, np.ndarray]:
    """One input tensor → (name, array of its shape); 400 for what OIP does not allow."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise ServiceError(400, f"inputs[{k}]: a tensor needs a name, a datatype, a shape and data")
    name = raw["name"]
    if name not in INPUTS:
        raise ServiceError(400, f"inputs[{k}]: tensor {_show(name, 40)} is not an input; they are {list(INPUTS)}")
    want, rank = INPUTS[name]
    datatype, shape, data = raw.get("datatype"), raw.get("shape"), raw.get("data")
    ok = {want} | (NUMERIC if want in ("FP64", "INT64") else set())
    if datatype not in ok:
        raise ServiceError(400, f"{name}: datatype must be {want}, not {_show(datatype, 40)}")
    if (
        not isinstance(shape, list)
        or len(shape) != rank
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise ServiceError(400, f"{name}: shape must be {rank} integer sizes ≥ 0, not {_show(shape, 40)}")
    if rank == 2 and shape[1] != d:
        raise ServiceError(400, f"{name}: shape[1] must be the model's {d} channels, not {shape[1]}")
    flat = _flatten(data, shape, name)
    integers = want == "INT64" or datatype.startswith(("INT", "UINT"))
    try:
        if want == "BYTES":
            if not all(isinstance(x, str) for x in flat):
                raise ValueError("strings")
            return name, np.asarray(flat, dtype=object)
        if want == "BOOL":
            if not all(isinstance(x, bool) for x in flat):
                raise ValueError("booleans (true: observed)")
            return name, np.asarray(flat, dtype=bool).reshape(shape)
        if any(isinstance(x, bool) or not isinstance(x, int | float) for x in flat):
            raise ValueError("numbers (an unobserved value: 0 with obs_mask false)")
        if integers:
            if any(isinstance(x, float) and not x.is_integer() for x in flat):
                raise ValueError(f"integers, as its datatype {datatype} says")
            if any(abs(x) >= 2**63 for x in flat):
                raise ValueError("integers within ±2^63")
            array = np.asarray(flat, dtype=np.int64).reshape(shape)
            return name, array if want == "INT64" else array.astype(np.float64)
        if any(isinstance(x, int) and abs(x) > 2**53 for x in flat):
            raise ValueError("numbers within ±2^53 (float64's exact integers)")
        return name, np.asarray(flat, dtype=np.float64).reshape(shape)
    except (ValueError, OverflowError) as exc:
        raise ServiceError(400, f"{name}: data must be {exc.args[0]}") from None


def _flatten(data: Any, shape: list[int], name: str) -> list[Any]:
    """OIP's data: a flat list in row-major order, or nested lists that follow `shape` exactly."""
    if not isinstance(data, list):
        raise ServiceError(400, f"{name}: data must be a list")
    size = int(np.prod(shape))
    if all(not isinstance(x, list) for x in data):
        if len(data) != size:
            raise ServiceError(400, f"{name}: {len(data)} values for shape {shape}")
        return data
    if len(shape) != 2 or len(data) != shape[0] or any(not isinstance(r, list) or len(r) != shape[1] for r in data):
        raise ServiceError(400, f"{name}: nested data must be {shape[0]} rows of {shape[-1]} values (shape {shape})")
    out: list[Any] = []
    for row in data:
        if any(isinstance(x, list) for x in row):
            raise ServiceError(400, f"{name}: nested data must be {shape[0]} rows of {shape[-1]} values")
        out.extend(row)
    return out
