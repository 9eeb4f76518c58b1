"""The synthetic PK table's truth (bench/pkpd.py): doses superpose, decay at the subject's rate, and a
larger dose gives a proportionally higher concentration after it and none before (nor at its time)."""

from __future__ import annotations

import numpy as np

from bench.pkpd import concentration, make_pkpd


def test_a_dose_adds_a_decaying_term_after_it_and_nothing_before() -> None:
    t = np.array([0.0, 1.0, 5.0, 10.0, 20.0])
    one = concentration(t, np.array([5.0]), np.array([100.0]), volume=50.0, k=0.1)
    np.testing.assert_allclose(one, [0.0, 0.0, 0.0, 2.0 * np.exp(-0.5), 2.0 * np.exp(-1.5)])  # at 5: pre-dose
    two = concentration(t, np.array([5.0, 10.0]), np.array([100.0, 300.0]), volume=50.0, k=0.1)
    np.testing.assert_allclose(two - one, concentration(t, np.array([10.0]), np.array([300.0]), 50.0, 0.1))
    bigger = concentration(t, np.array([5.0]), np.array([200.0]), volume=50.0, k=0.1)
    np.testing.assert_allclose(bigger, 2 * one)


def test_the_table_has_the_long_shape_and_is_seeded() -> None:
    a, b = make_pkpd(20, seed=3), make_pkpd(20, seed=3)
    assert a.equals(b) and not a.equals(make_pkpd(20, seed=4))
    assert list(a.columns) == ["id", "time", "conc", "dose", "weight"]
    assert a["id"].nunique() == 20
    assert not (a["conc"].notna() & a["dose"].notna()).any()  # a row is a sample or a dose
    assert (a.groupby("id")["weight"].nunique() == 1).all()  # static per subject
    assert (a["conc"].dropna() > 0).all() and a.groupby("id")["time"].is_monotonic_increasing.all()
    samples = a[a["conc"].notna()]
    assert not samples.duplicated(["id", "time"]).any()  # one sample per subject and time
    first = a.groupby("id").first()
    assert (first["time"] == 0.0).all() and first["dose"].notna().all()  # every subject is dosed at 0
