"""The device rules: which device, and how many intra-op threads a solve of a given size uses."""

from __future__ import annotations

import pytest
import torch

from latentcast.models.data import collate
from latentcast.models.device import intra_op_threads, threads_for
from latentcast.models.latent_ode import LatentODE
from tests.conftest import tiny_config


@pytest.fixture
def two_threads() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_small_cpu_solves_use_one_thread_and_restore_the_setting(two_threads: object) -> None:
    cpu = torch.device("cpu")
    assert threads_for(256, cpu) == 1 and threads_for(257, cpu) == 2
    assert threads_for(10, cpu, small_rows=0) == 2
    with intra_op_threads(8, cpu) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), intra_op_threads(8, cpu):
        raise RuntimeError("a failed solve")
    assert torch.get_num_threads() == 2  # restored after a failure too


def test_predict_runs_small_batches_on_one_thread_with_the_same_answer(
    series, normalizer, monkeypatch, two_threads: object
) -> None:
    torch.manual_seed(0)
    model = LatentODE(tiny_config(), len(normalizer.channels)).eval()
    batch = collate(series[:2], normalizer)
    query = torch.linspace(0.0, 1.0, 5).repeat(2, 1)
    seen: list[int] = []
    encode = model.encode

    def spy(*args: object, **kw: object) -> object:
        seen.append(torch.get_num_threads())
        return encode(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "encode", spy)
    one = model.predict(batch, query, num_samples=4)  # 8 rows
    many = model.predict(batch, query, num_samples=4, small_rows=0)
    assert seen == [1, 2] and torch.get_num_threads() == 2
    torch.testing.assert_close(one.mean, many.mean, rtol=1e-5, atol=1e-6)
