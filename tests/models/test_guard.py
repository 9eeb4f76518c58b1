"""The input checks: what the model cannot represent is refused per series, what is unusual is
answered with a warning, markers are read as not observed, and a good series packs the same whatever
else is in its request."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentcast.models.data import Normalizer, TimeSpec
from latentcast.models.guard import Checked, Limits, pack
from latentcast.models.validity import Validity

NORM = Normalizer(("lin", "log"), (False, True), (0.0, 0.0), (1.0, 1.0), "robust")


def _limits(**kw: Any) -> Limits:
    return Limits(**{"time": TimeSpec("day", 1.0), "max_horizon": 100.0, "normalizer": NORM, **kw})


def _pack(values: list[list[float]], times: list[float], queries: list[float], **kw: Any) -> Checked:
    v = np.asarray(values, dtype=np.float64)
    return pack(
        ["a"],
        np.asarray(times, dtype=np.float64),
        np.array([len(times)]),
        v,
        np.asarray(queries, dtype=np.float64),
        np.array([len(queries)]),
        _limits(**kw),
        lambda f, i, j: "x",
    )


@pytest.mark.parametrize(
    ("values", "times", "queries", "kw", "field", "match", "setting"),
    [
        ([[1e39, 1.0]], [0.0], [1.0], {}, "values", "beyond float32", None),
        ([[math.inf, 1.0]], [0.0], [1.0], {}, "values", "beyond float32", None),
        ([[1.0, 0.0]], [0.0], [1.0], {}, "values", "'log' is modelled on a log scale; values must be > 0", None),
        ([[1.0, -2.0]], [0.0], [1.0], {}, "values", "values must be > 0", None),
        ([[np.nan, np.nan]], [0.0], [1.0], {}, "values", "no observed value", None),
        ([[1.0, 1.0]], [math.nan], [1.0], {}, "timestamps", "finite", None),
        ([[1.0, 1.0], [1.0, 1.0]], [2.0, 1.0], [1.0], {}, "timestamps", "strictly increasing", None),
        (
            [[1.0, 1.0], [1.0, 1.0]],
            [0.0, 1e308],
            [1.0],
            {},
            "timestamps",
            "observations span 1e\\+308 days",
            "max_horizon",
        ),
        ([[1.0, 1.0]], [0.0], [1e308], {"max_horizon": np.inf}, "query_times", "lies 1e\\+308 days", "max_horizon"),
        ([[1.0, 1.0]], [0.0], [150.0], {}, "query_times", "the limit is 100", "max_horizon"),
        (
            [[25.0, 1.0]],
            [0.0],
            [1.0],
            {"unusual_scales": 20.0, "strict": True},
            "values",
            "lies 25 robust scales \\(training IQR / 1.349\\) from the training median; the limit is 20",
            "unusual_scales",
        ),
    ],
)
def test_what_the_model_cannot_represent_is_refused(values, times, queries, kw, field, match, setting) -> None:
    out = _pack(values, times, queries, **kw)
    assert len(out.packed) == 0 and out.warnings == []
    (issue,) = out.refused
    assert (issue.series, issue.field, issue.setting) == (0, field, setting)
    assert __import__("re").search(match, issue.msg), issue.msg


def test_unusual_values_are_answered_with_a_warning_that_names_the_scale() -> None:
    out = _pack([[25.0, 1.0], [np.nan, 2.0]], [10.0, 12.0], [20.0, 5.0], unusual_scales=20.0)
    assert out.refused == []
    np.testing.assert_array_equal(out.packed.times, [0.0, 2.0])
    np.testing.assert_array_equal(out.packed.queries, [10.0, -5.0])
    assert out.packed.values[0, 0] == 25.0  # answered from the value as sent
    (w,) = out.warnings
    assert (w.kind, w.field, w.index, w.setting) == ("unusual_value", "values", 0, "unusual_scales")
    assert "1 value more than 20 robust scales (training IQR / 1.349) from the training median" in w.msg
    assert "[0] 'lin' = 25, 25 scales out" in w.msg


def test_values_training_set_aside_as_entry_errors_are_flagged_below_the_unusual_limit() -> None:
    """A model trained with outlier_z 10: a value 15 scales out (under the unusual limit of 20) is one it
    never learned from, answered with a warning saying so; refused when strict; 9 scales out: nothing."""
    out = _pack([[15.0, 1.0], [9.0, 2.0]], [0.0, 1.0], [2.0], unusual_scales=20.0, entry_error_scales=10.0)
    assert out.refused == [] and len(out.packed) == 1
    (w,) = out.warnings
    assert (w.kind, w.index) == ("unusual_value", 0)
    assert "1 value the model never learned from (its training set values more than 10 robust scales" in w.msg
    assert "[0] 'lin' = 15, 15 scales out" in w.msg
    strict = _pack([[15.0, 1.0]], [0.0], [2.0], unusual_scales=20.0, entry_error_scales=10.0, strict=True)
    (issue,) = strict.refused
    assert issue.setting == "strict" and "aside as entry errors" in issue.msg
    assert _pack([[9.0, 1.0]], [0.0], [2.0], unusual_scales=20.0, entry_error_scales=10.0).warnings == []
    far = _pack([[25.0, 1.0]], [0.0], [2.0], unusual_scales=20.0, entry_error_scales=10.0)  # one warning, not two
    assert [w.setting for w in far.warnings] == ["unusual_scales"]


def test_bounds_set_values_aside_with_a_warning_or_refuse_them_when_strict() -> None:
    validity = Validity.from_config({"lin": (0.0, 10.0)}, {"*": (-1.0,)}, ("lin", "log"), "a test")
    values = [[12.0, 1.0], [5.0, 2.0], [-1.0, 3.0]]  # 12 is outside; -1 means unknown
    out = _pack(values, [0.0, 1.0, 2.0], [3.0], validity=validity)
    assert out.refused == []
    np.testing.assert_array_equal(out.packed.values[:, 0], [np.nan, 5.0, np.nan])  # both read as not observed
    (w,) = out.warnings  # the marker is silent: the model declares it
    assert w.kind == "out_of_bounds" and "[0] 'lin' = 12 (bounds [0, 10])" in w.msg
    strict = _pack(values, [0.0, 1.0, 2.0], [3.0], validity=validity, strict=True)
    assert len(strict.packed) == 0 and strict.refused[0].setting == "strict"
    assert "outside its physical bounds" in strict.refused[0].msg


def test_a_series_left_with_only_markers_is_refused() -> None:
    validity = Validity.from_config({}, {"*": (-1.0,)}, ("lin", "log"))
    out = _pack([[-1.0, np.nan]], [0.0], [1.0], validity=validity)
    assert out.refused[0].msg.startswith("no observed value")


def test_every_refused_series_is_listed_and_the_rest_are_packed() -> None:
    ids = ["ok0", "neg", "ok1", "inf", "back"]
    times = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 1.0])
    n_obs = np.array([1, 1, 2, 2, 2])
    values = np.array([[1.0, 1.0], [1.0, -1.0], [1.0, 2.0], [2.0, 2.0], [np.inf, 1.0], [1.0, 1.0], [1, 1], [1, 1]])
    out = pack(ids, times, n_obs, values, np.ones(5), np.ones(5, dtype=np.int64), _limits(), lambda f, i, j: "t")
    assert [(x.series, x.field) for x in out.refused] == [(1, "values"), (3, "values"), (4, "timestamps")]
    assert out.packed.ids == ["ok0", "ok1"] and out.positions.tolist() == [0, 2]


def test_empty_series_are_refused_without_failing_the_others() -> None:
    out = pack(
        ["a", "b", "c"],
        np.array([0.0, 1.0]),
        np.array([1, 0, 1]),
        np.ones((2, 2)),
        np.array([1.0, 2.0]),
        np.array([1, 1, 0]),
        _limits(),
        lambda f, i, j: "t",
    )
    assert [(x.series, x.field) for x in out.refused] == [(1, "timestamps"), (2, "query_times")]
    assert out.packed.ids == ["a"]


_SERIES = st.fixed_dictionaries(
    {
        "n": st.integers(1, 4),
        "bad": st.sampled_from(["none", "log0", "inf", "order", "far", "unusual", "empty"]),
        "seed": st.integers(0, 10_000),
    }
)


def _one(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(spec["seed"])
    n = spec["n"]
    t = np.cumsum(rng.uniform(0.1, 2.0, n))
    v = rng.uniform(0.5, 2.0, (n, 2))
    q = t[-1] + rng.uniform(-1.0, 3.0, 2)
    bad = spec["bad"]
    if bad == "log0":
        v[-1, 1] = 0.0
    elif bad == "inf":
        v[0, 0] = np.inf
    elif bad == "order" and n > 1:
        t[-1] = t[0]
    elif bad == "far":
        q[0] = 1e6
    elif bad == "unusual":
        v[0, 0] = 1e3
    elif bad == "empty":
        v[:] = np.nan
    return t, v, q


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(_SERIES, min_size=1, max_size=6))
def test_a_good_series_packs_exactly_as_alone_whatever_its_company(specs: list[dict[str, Any]]) -> None:
    parts = [_one(s) for s in specs]
    limits = _limits(unusual_scales=20.0)
    together = pack(
        [f"s{i}" for i in range(len(parts))],
        np.concatenate([p[0] for p in parts]),
        np.array([len(p[0]) for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        np.array([len(p[2]) for p in parts]),
        limits,
        lambda f, i, j: "t",
    )
    for i, (t, v, q) in enumerate(parts):
        alone = pack([f"s{i}"], t, np.array([len(t)]), v, q, np.array([len(q)]), limits, lambda f, i, j: "t")
        if alone.refused:
            assert [x.msg for x in together.refused if x.series == i] == [alone.refused[0].msg]
            assert i not in together.positions
            continue
        k = together.positions.tolist().index(i)
        got = together.packed.take(k, k + 1)
        for name in ("times", "values", "queries", "offsets", "query_offsets"):
            np.testing.assert_array_equal(getattr(got, name), getattr(alone.packed, name), err_msg=name)
        assert [w.msg for w in together.warnings if w.series == i] == [w.msg for w in alone.warnings]
