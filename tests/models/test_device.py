"""The device rules: which device, and how many intra-op threads a solve of a given size uses."""

from __future__ import annotations

import pytest
import torch

from latentcast.models.data import collate
from latentcast.models.device import ThreadChoice, ThreadPolicy, intra_op_threads
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
    fresh = ThreadChoice()
    policy = ThreadPolicy()
    assert policy.threads(256, cpu, fresh) == 1 and policy.threads(257, cpu, fresh) == 2
    assert ThreadPolicy(small_rows=0).threads(10, cpu, fresh) == 2
    assert ThreadPolicy(small_rows=0, most=1).threads(10_000, cpu, fresh) == 1  # the express lane's
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
    many = model.predict(batch, query, num_samples=4, threads=ThreadPolicy(small_rows=0))
    assert seen == [1, 2] and torch.get_num_threads() == 2
    torch.testing.assert_close(one.mean, many.mean, rtol=1e-5, atol=1e-6)


def test_larger_solves_take_the_thread_count_that_has_been_faster_and_explore_the_other() -> None:
    choice = ThreadChoice(explore=4)
    assert choice.pick(1000, 2) == 2  # nothing measured: all threads first
    choice.record(1000, 2, 2.0)
    assert choice.pick(1000, 2) == 1  # then one thread once
    choice.record(1000, 1, 1.0)  # one thread twice as fast (a busy machine)
    picks = []
    for _ in range(8):
        picks.append(choice.pick(1000, 2))
        choice.record(1000, picks[-1], 1.0 if picks[-1] == 1 else 2.0)
    assert picks.count(1) == 6 and picks.count(2) == 2  # every 4th solve tries the other
    assert choice.pick(100_000, 2) == 2  # another size class has its own record
    assert choice.pick(1000, 1) == 1  # torch set to one thread: nothing to choose


def test_the_choice_follows_the_load_when_it_changes() -> None:
    choice = ThreadChoice(explore=4)
    choice.record(600, 2, 0.6)
    choice.record(600, 1, 1.2)  # quiet: all threads faster
    assert choice.pick(600, 2) == 2
    for _ in range(4):  # the machine gets busy: all threads slow down
        choice.record(600, 2, 3.0)
    assert choice.pick(600, 2) == 1


def test_intra_op_threads_times_large_cpu_blocks_only(two_threads: object) -> None:
    cpu = torch.device("cpu")
    choice = ThreadChoice()
    with intra_op_threads(8, cpu, choice=choice):
        pass
    assert choice._seen == {}
    with intra_op_threads(1000, cpu, choice=choice) as n:
        assert n == 2 == torch.get_num_threads()
    with intra_op_threads(1000, cpu, choice=choice) as n:
        assert n == 1 == torch.get_num_threads()  # the other, once
    assert choice._seen == {(1000).bit_length(): 2} and torch.get_num_threads() == 2


def test_a_policy_capped_at_one_thread_runs_one_however_torch_is_set(two_threads: object) -> None:
    """The express lane's forecaster: its solves run on one thread without anyone changing torch's
    setting between requests, and the setting is left as it was."""
    cpu = torch.device("cpu")
    with intra_op_threads(100_000, cpu, ThreadPolicy(small_rows=0, most=1), ThreadChoice()) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="most ≥ 1"):
        ThreadPolicy(most=0)
