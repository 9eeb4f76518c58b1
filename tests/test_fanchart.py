from __future__ import annotations

import pandas as pd
import pytest


def test_a_series_channels_share_its_time_axis(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Channel q observed and forecast only late in the series is drawn on the same time axis as p."""
    import matplotlib.pyplot as plt

    import latentcast.fanchart as fanchart

    figures: list[object] = []
    monkeypatch.setattr(fanchart.plt, "close", figures.append)
    obs = pd.DataFrame({"id": ["a"] * 4 + ["b"], "time": [0.0, 1.0, 8.0, 9.0, 0.0], "p": [1.0, 2.0, None, None, 5.0],
                        "q": [None, None, 3.0, 4.0, None]})  # fmt: skip
    fc = pd.DataFrame({"id": ["a"] * 4 + ["b"], "time": [2.0, 3.0, 10.0, 11.0, 500.0],
                       "channel": ["p", "p", "q", "q", "p"], "point": [2.0, 2.1, 4.0, 4.1, 4.0], "q0.1": [1.5] * 5,
                       "q0.9": [4.5] * 5})  # fmt: skip
    locf = fc[["id", "time", "channel"]].assign(locf=[2.0, 2.0, 4.0, 4.0, 5.0])
    out = fanchart.fan_chart(obs, fc, tmp_path / "f.png", time_unit="day", baseline=locf)
    assert out.stat().st_size > 0 and len(figures) == 1
    left, right, b_p, b_q = figures[0].axes  # type: ignore[attr-defined]
    assert left.get_xlim() == right.get_xlim() and left.get_xlim()[0] <= 0.0 and left.get_xlim()[1] >= 11.0
    assert b_p.get_xlim()[1] >= 500.0 and left.get_xlim()[1] < 100  # series b has its own time axis
    assert left.get_xlabel() == "day" and all(
        t.get_visible() for t in left.get_xticklabels()
    )  # not only the bottom row
    assert [t.get_text() for t in b_q.texts] == ["no q in this series"]
    dashed = [ln for ln in left.get_lines() if ln.get_label() == "LOCF"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [2.0, 2.0]
    plt.close("all")
