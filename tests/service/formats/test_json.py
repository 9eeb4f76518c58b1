"""The JSON format: a body decoded and validated against a model, without HTTP."""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np
import pytest

from latentcast.models import Limits, TimeSpec
from latentcast.service.config import Settings
from latentcast.service.errors import ServiceError
from latentcast.service.formats import json as json_format
from latentcast.service.schemas import ForecastRequest
from latentcast.service.validate import Job, ModelSpec

LABS = ModelSpec("labs", "v1", ("a", "logb", "c"), Limits(TimeSpec("day", 1 / 365.25), max_horizon=6.0))
TOY = ModelSpec("toy", "v1", ("x", "y"), Limits(TimeSpec("unitless", 1.0)))


def prepare(req: ForecastRequest, model: ModelSpec, settings: Settings) -> Job:
    """The JSON format's decode of this request's body, with `model` as the only served model."""
    body = req.model_dump_json(exclude_none=True).encode()
    return json_format.decode(body, {}, lambda name: model, settings)


def _plain(**kw: Any) -> Settings:
    defaults = {name: f.get_default(call_default_factory=True) for name, f in Settings.model_fields.items()}
    defaults.update(kw)
    return Settings.model_construct(**defaults)


def _req(**series: Any) -> ForecastRequest:
    s = {
        "id": "p1",
        "timestamps": [0.0, 30.0, 90.0],
        "values": [[1, 2, 3], [None, 2, 3], [1, None, None]],
        "query_times": [120.0, -10.0, 45.0],
    }
    s.update(series)
    return ForecastRequest.model_validate({"series": [s]})


def _fails(req: ForecastRequest, status: int, match: str, model: ModelSpec = LABS, **settings: Any) -> ServiceError:
    with pytest.raises(ServiceError, match=match) as info:
        prepare(req, model, _plain(**settings))
    assert info.value.status == status
    return info.value


def test_numbers_are_in_the_model_time_unit_relative_to_the_first_observation() -> None:
    job = prepare(_req(timestamps=[100.0, 130.0, 190.0]), LABS, _plain())
    s = job.packed
    np.testing.assert_allclose(s.times, np.array([0, 30, 90]) / 365.25)
    np.testing.assert_allclose(s.queries, (np.array([120.0, -10.0, 45.0]) - 100) / 365.25)
    assert np.isnan(s.values[1, 0]) and s.values[0, 2] == 3
    assert job.echo.as_lists() == [[120.0, -10.0, 45.0]] and job.levels == (0.1, 0.5, 0.9)


def test_iso_times_with_offsets() -> None:
    job = prepare(
        _req(
            timestamps=["2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z", "2026-04-01T02:00:00+02:00"],
            query_times=["2026-01-16", "2025-12-31T12:00:00Z"],
        ),
        LABS,
        _plain(),
    )
    np.testing.assert_allclose(job.packed.times * 365.25, [0, 30, 90])
    np.testing.assert_allclose(job.packed.queries * 365.25, [15, -0.5])


def test_rows_with_nothing_observed_are_dropped_but_ordering_still_checked() -> None:
    job = prepare(_req(values=[[1, 2, 3], [None, None, None], [1, None, None]]), LABS, _plain())
    np.testing.assert_allclose(job.packed.times * 365.25, [0, 90])


@pytest.mark.parametrize(
    ("series", "match"),
    [
        ({"timestamps": [0.0, 30.0, 30.0]}, r"timestamps\[2\]: must be strictly increasing"),
        ({"timestamps": [0.0, "2026-01-01", 2.0]}, "mixes numbers and date-time"),
        ({"query_times": ["2026-01-01"]}, "same kind as timestamps"),
        (
            {"timestamps": ["2026-01-01", "yesterday", "2026-02-01"], "query_times": ["2026-03-01"]},
            r"timestamps\[1\]: 'yesterday' is not an ISO-8601",
        ),
        ({"values": [[1, 2, 3], [1, 2, 3]]}, "has 2 rows for 3 timestamps"),
        ({"values": [[1, 2, 3], [1, 2], [1, 2, 3]]}, r"values\[1\]: row has 2 values; model 'labs' has 3"),
        ({"values": [[None] * 3] * 3}, "no observed value at all"),
        (
            {"query_times": [90.0 + 7 * 365.25]},
            r"query_times\[0\]: 2646.75 lies 2557 days from the observations; the limit is 2192",
        ),
    ],
)
def test_field_errors_name_the_series_and_field(series: dict[str, Any], match: str) -> None:
    err = _fails(_req(**series), 422, match)
    assert err.errors[0]["series_id"] == "p1"
    assert err.detail.startswith("series 'p1': series[0].")


def test_unitless_models_refuse_date_times() -> None:
    req = ForecastRequest.model_validate(
        {"series": [{"id": "a", "timestamps": ["2026-01-01"], "values": [[1, 2]], "query_times": ["2026-01-02"]}]}
    )
    _fails(req, 422, "takes numeric times", model=TOY)


def test_request_level_errors() -> None:
    two = ForecastRequest.model_validate({"series": [_req().series[0].model_dump(), _req().series[0].model_dump()]})
    err = _fails(two, 422, r"2 of 2 series refused .* duplicate id \(also series\[1\]\)")
    assert [e["msg"] for e in err.errors] == ["duplicate id (also series[1])", "duplicate id (also series[0])"]
    _fails(
        ForecastRequest.model_validate({"series": [_req().series[0].model_dump()], "quantiles": [0.5, 1.0]}),
        422,
        r"quantiles\[1\]: 1.0 is not in \[0.0001, 0.9999\]",
    )
    _fails(
        ForecastRequest.model_validate({"series": [_req().series[0].model_dump()], "num_samples": 9}),
        422,
        "LATENTCAST_MAX_NUM_SAMPLES",
        max_num_samples=8,
    )


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"max_series": 0}, "LATENTCAST_MAX_SERIES"),
        ({"max_points": 2}, "LATENTCAST_MAX_POINTS"),
        ({"max_query_times": 2}, "LATENTCAST_MAX_QUERY_TIMES"),
        ({"max_total_points": 5}, "LATENTCAST_MAX_TOTAL_POINTS"),
    ],
)
def test_limits_answer_413_and_name_the_setting(settings: dict[str, Any], match: str) -> None:
    _fails(_req(), 413, match, **settings)


def _random_request(rng: np.random.Generator, n_series: int, dates: bool, mixed: bool = False) -> ForecastRequest:
    series = []
    for i in range(n_series):
        n = int(rng.integers(1, 8))
        t = np.cumsum(rng.uniform(0.5, 40.0, n)) - 100.0
        vals = rng.normal(size=(n, 3)).round(3)
        vals[rng.random((n, 3)) < 0.4] = np.nan
        vals[rng.integers(0, n)] = [1.0, np.nan, 2.0]  # at least one observed row
        q = np.sort(rng.uniform(t[0] - 50, t[-1] + 200, int(rng.integers(1, 6))))
        as_date = dates and not (mixed and i % 2)

        def fmt(x: np.ndarray, as_date: bool = as_date) -> list[Any]:
            if not as_date:
                return [float(v) for v in x]
            base = np.datetime64("2026-01-01T00:00:00", "s")
            return [str(base + np.timedelta64(int(v * 86400), "s")) + "Z" for v in x]

        rows = [[None if np.isnan(v) else float(v) for v in row] for row in vals]
        series.append({"id": f"s{i}", "timestamps": fmt(t), "values": rows, "query_times": fmt(q)})
    return ForecastRequest.model_validate({"series": series})


@pytest.mark.parametrize(("dates", "mixed"), [(False, False), (True, False), (True, True)])
def test_a_request_prepares_as_its_series_would_alone(dates: bool, mixed: bool) -> None:
    """Whole-request array checks (and, with numbers in some series and dates in others, the series by
    series conversion) give each series exactly what a request of that series alone gives."""
    rng = np.random.default_rng(7)
    for _ in range(5):
        req = _random_request(rng, 40, dates, mixed)
        whole = prepare(req, LABS, _plain()).packed
        for i, s in enumerate(req.series):
            alone = prepare(ForecastRequest(series=[s]), LABS, _plain()).packed
            part = whole.take(i, i + 1)
            assert part.ids == alone.ids == [s.id]
            for a, b in zip(
                (part.times, part.values, part.offsets, part.queries, part.query_offsets),
                (alone.times, alone.values, alone.offsets, alone.queries, alone.query_offsets),
                strict=True,
            ):
                np.testing.assert_array_equal(a, b)


def test_errors_list_every_failing_series_of_a_bulk_request() -> None:
    rng = np.random.default_rng(3)
    req = _random_request(rng, 30, dates=False)
    body = req.model_dump()
    body["series"][17].update(timestamps=[0.0, 5.0, 5.0], values=[[1.0, None, 2.0]] * 3)
    body["series"][23]["values"][0] = [1.0, 2.0]
    err = _fails(ForecastRequest.model_validate(body), 422, r"2 of 30 series refused .*series\[17\]\.timestamps")
    assert [(e["series_id"], e["loc"]) for e in err.errors] == [
        ("s17", ["series", 17, "timestamps", 2]),
        ("s23", ["series", 23, "values", 0]),
    ]
    assert "must be strictly" in err.errors[0]["msg"] and "row has 2 values" in err.errors[1]["msg"]
    skipped = prepare(ForecastRequest.model_validate({**body, "on_error": "skip"}), LABS, _plain())
    assert skipped.size == 28 and [e["series_id"] for e in skipped.refused] == ["s17", "s23"]
    assert 17 not in skipped.positions and skipped.packed.ids[17] == "s18"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (gzip.compress(b'{"series": []}'), "Content-Encoding: gzip"),
        (b'\xef\xbb\xbf{"series": []}', "byte-order mark"),
        ('{"series": []}'.encode("utf-16"), "UTF-16 or UTF-32: send UTF-8"),
        ('{"series": []}'.encode("utf-16-le"), "UTF-16 or UTF-32: send UTF-8"),
    ],
)
def test_a_body_that_is_not_utf8_json_text_is_named(body: bytes, says: str) -> None:
    from latentcast.service.errors import ServiceError
    from latentcast.service.formats.json import document

    with pytest.raises(ServiceError, match="malformed JSON") as info:
        document(body)
    assert info.value.status == 400 and says in info.value.detail
