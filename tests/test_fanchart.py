from __future__ import annotations

import pandas as pd
import pytest


def test_a_series_channels_share_its_time_axis(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Channel q observed and forecast only late in the series is drawn on the same time axis as p."""
    import matplotlib.pyplot as plt

    import latentcast.fanchart as fanchart

    figures: list[object] = []
    monkeypatch.setattr(fanchart.plt, "close", figures.append)
    obs = pd.DataFrame({"id": ["a"] * 4, "time": [0.0, 1.0, 8.0, 9.0], "p": [1.0, 2.0, None, None],
                        "q": [None, None, 3.0, 4.0]})  # fmt: skip
    fc = pd.DataFrame({"id": ["a"] * 4, "time": [2.0, 3.0, 10.0, 11.0], "channel": ["p", "p", "q", "q"],
                       "point": [2.0, 2.1, 4.0, 4.1], "q0.1": [1.5] * 4, "q0.9": [4.5] * 4})  # fmt: skip
    out = fanchart.fan_chart(obs, fc, tmp_path / "f.png", time_unit="day")
    assert out.stat().st_size > 0 and len(figures) == 1
    left, right = figures[0].axes  # type: ignore[attr-defined]
    assert left.get_xlim() == right.get_xlim() and left.get_xlim()[0] <= 0.0 and left.get_xlim()[1] >= 11.0
    assert left.get_xlabel() == "day"
    plt.close("all")
