"""The packed forecaster on a real GPU equals the CPU (run with `pytest -m gpu` where there is one)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from latentcast.models.forecast import Forecaster
from latentcast.models.latent_ode import LatentODE
from latentcast.models.packed import PackedSeries
from tests.conftest import make_series, tiny_config

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_packed_forecasts_on_the_gpu_match_the_cpu(normalizer) -> None:
    series = make_series(37, seed=5)
    rng = np.random.default_rng(0)
    queries = [s.times[-1] + rng.uniform(-2, 2, int(rng.integers(1, 9))) for s in series]
    packed = PackedSeries.from_series(series, queries)
    model = LatentODE(tiny_config(), 3)
    cpu = Forecaster(model, normalizer, "cpu", num_samples=8, batch_size=16)
    gpu = Forecaster(copy.deepcopy(model), normalizer, "cuda", num_samples=8, batch_size=16)
    a = cpu.predict_packed(packed, levels=(0.1, 0.5, 0.9), return_samples=True)
    b = gpu.predict_packed(packed, levels=(0.1, 0.5, 0.9), return_samples=True)
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_allclose(b.mean, a.mean, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(b.quantiles, a.quantiles, rtol=1e-3, atol=1e-5)
    assert a.samples is not None and b.samples is not None
    np.testing.assert_allclose(b.samples, a.samples, rtol=1e-3, atol=1e-5)
