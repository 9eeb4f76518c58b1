from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import numpy as np
import pytest
import torch

from latentcast.models.checkpoint import CheckpointError, ModelBundle, load_checkpoint, read_payload, save_checkpoint
from latentcast.models.data import Normalizer, TimeSpec, collate
from latentcast.models.latent_ode import LatentODE
from tests.conftest import tiny_config


def _bundle(normalizer) -> ModelBundle:
    model = LatentODE(tiny_config(encoder="odernn", learn_std=True), 3).eval()
    return ModelBundle("tiny", model, normalizer, TimeSpec("day", 0.5), {"series": 6}, {"val_nmse": 0.5})


def test_round_trip_restores_everything(tmp_path, series, normalizer) -> None:
    b = dataclasses.replace(_bundle(normalizer), calibration=(1.2, 1.0, 0.9), persistence=(0.3, 0.0, 1.0))
    path = save_checkpoint(tmp_path / "m.pt", b)
    back = load_checkpoint(path)
    assert back.config == b.config and back.normalizer == b.normalizer and back.time == b.time
    assert back.calibration == (1.2, 1.0, 0.9) and back.persistence == (0.3, 0.0, 1.0)
    assert back.data == {"series": 6} and back.metrics == {"val_nmse": 0.5}
    assert back.version and back.channels == ("a", "b", "c") and back.created
    batch = collate(series, normalizer)
    q = torch.linspace(-1, 4, 6).expand(len(series), -1)
    a = b.model.predict(batch, q, num_samples=4, levels=(0.1, 0.9))
    c = back.model.predict(batch, q, num_samples=4, levels=(0.1, 0.9))
    torch.testing.assert_close(a.mean, c.mean, rtol=0, atol=0)
    torch.testing.assert_close(a.quantiles, c.quantiles, rtol=0, atol=0)


def test_numpy_numbers_in_the_metadata_are_saved_as_plain_ones(tmp_path, normalizer) -> None:
    """A report holding numpy scalars (easy to write by accident) still loads weights-only."""
    b = dataclasses.replace(_bundle(normalizer), metrics={"report": {"ratio": np.float64(0.5), "n": np.int64(3)}})
    back = load_checkpoint(save_checkpoint(tmp_path / "m.pt", b, train_state={"history": [{"x": np.float32(1)}]}))
    assert back.metrics == {"report": {"ratio": 0.5, "n": 3}} and type(back.metrics["report"]["ratio"]) is float
    assert read_payload(tmp_path / "m.pt")["train_state"] == {"history": [{"x": 1.0}]}


def test_version_is_a_digest_of_the_weights(tmp_path, normalizer) -> None:
    b = _bundle(normalizer)
    v1 = load_checkpoint(save_checkpoint(tmp_path / "a.pt", b)).version
    v2 = load_checkpoint(save_checkpoint(tmp_path / "b.pt", b)).version
    with torch.no_grad():
        next(b.model.parameters()).add_(1.0)
    v3 = load_checkpoint(save_checkpoint(tmp_path / "c.pt", b)).version
    assert v1 == v2 != v3


def test_payload_is_plain_enough_for_weights_only(tmp_path, normalizer) -> None:
    path = save_checkpoint(tmp_path / "m.pt", _bundle(normalizer), train_state={"epoch": 3})
    payload = torch.load(path, weights_only=True)
    assert payload["train_state"] == {"epoch": 3} and payload["format_version"] == 1


def test_pickled_objects_are_refused(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    with path.open("wb") as fh:
        pickle.dump({"format": "latentcast.checkpoint", "x": Evil()}, fh, protocol=2)
    with pytest.raises(CheckpointError, match="weights-only"):
        read_payload(path)


def test_wrong_format_and_version_are_refused(tmp_path, normalizer) -> None:
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a latentcast checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    path = save_checkpoint(tmp_path / "m.pt", _bundle(normalizer))
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (
            lambda p: next(v for v in p["state_dict"].values() if v.is_floating_point()).fill_(float("nan")),
            "non-finite",
        ),
        (
            lambda p: p["normalizer"].__setitem__("std", [0.0] * len(p["normalizer"]["std"])),
            "std must be finite and > 0",
        ),
        (lambda p: p["config"].__setitem__("min_std", -1.0), "configuration is not valid"),
        (lambda p: p["time"].__setitem__("unit", "fortnight"), "configuration is not valid"),
        (lambda p: p.__setitem__("persistence", [0.1, float("nan")]), "persistence must be one time scale"),
        (lambda p: p.__setitem__("persistence", [0.1]), "persistence must be one time scale"),
    ],
)
def test_a_checkpoint_that_cannot_forecast_is_refused_at_load(tmp_path, corrupt: Any, match: str) -> None:
    bundle = ModelBundle(
        "m",
        LatentODE(tiny_config(), 2),
        Normalizer(("a", "b"), (False, False), (0.0, 0.0), (1.0, 1.0)),
        TimeSpec("day", 1.0),
    )
    path = save_checkpoint(tmp_path / "m.pt", bundle)
    payload = read_payload(path)
    corrupt(payload)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
