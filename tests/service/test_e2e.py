"""End to end: `latentcast serve` as a subprocess on 127.0.0.1, the embedded default models, real HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

import latentcast
from bench.server import ROOT, ServerProcess, free_port
from latentcast.client import LatentcastClient
from latentcast.models.training.datasets.pbcseq import read_pbcseq
from latentcast.models.training.datasets.physionet2012 import CHANNELS as PHYSIONET_CHANNELS
from latentcast.models.training.datasets.physionet2012 import TIME, protocol_split, read_records
from tests.service.conftest import SERVER_START_S

EXAMPLE = {
    "id": "patient-17",
    "timestamps": ["2026-01-03T00:00:00Z", "2026-07-01T00:00:00Z", "2027-01-15T09:30:00+01:00"],
    "values": [
        [1.2, None, 3.4, 210.0, 55.0, 240.0, 10.1],
        [1.5, 260.0, None, None, 60.0, 230.0, 10.4],
        [1.7, None, 3.3, 250.0, None, 220.0, 10.6],
    ],
    "query_times": ["2027-06-01T00:00:00Z", "2026-04-01T00:00:00Z", "2025-12-01T00:00:00Z"],
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with ServerProcess(
        {"LATENTCAST_NUM_SAMPLES": "32", "LATENTCAST_MAX_WAIT_MS": "5"}, "cpu", timeout=SERVER_START_S
    ) as srv:
        yield srv.url


def _patients(n: int) -> list[dict[str, Any]]:
    frame = read_pbcseq()
    channels = ["bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime"]
    out = []
    for pid, g in list(frame.groupby("id"))[:n]:
        days = g["time"].to_numpy(dtype=float)
        vals = [[None if pd.isna(v) else float(v) for v in row] for row in g[channels].to_numpy()]
        out.append(
            {
                "id": f"p{pid}",
                "timestamps": days.tolist(),
                "values": vals,
                "query_times": [days[-1] + 365.0, days[0] + 10.0, days[-1] + 30.0],
            }
        )
    return out


def test_example_request_shapes_order_and_quantiles(server: str) -> None:
    r = httpx.post(f"{server}/forecast", json={"model": "pbcseq", "series": [EXAMPLE], "quantiles": [0.1, 0.5, 0.9]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"]["name"] == "pbcseq" and out["channels"][0] == "bili"
    f = out["forecasts"][0]
    assert f["id"] == "patient-17" and f["query_times"] == EXAMPLE["query_times"]
    mean = np.array(f["mean"])
    q = np.array([f["quantiles"][k] for k in ("0.1", "0.5", "0.9")])
    assert mean.shape == (3, 7) and q.shape == (3, 3, 7)
    assert np.isfinite(mean).all() and (q[0] <= q[1]).all() and (q[1] <= q[2]).all()
    assert (mean > 0).all()  # every lab is positive; log-scale channels stay so
    models = httpx.get(f"{server}/models").json()["models"]
    assert {m["name"] for m in models} >= {"pbcseq", "physionet2012", "spirals"}


def test_same_forecast_alone_in_a_batch_and_under_concurrency(server: str) -> None:
    patients = _patients(64)
    target = patients[5]

    def post(series: list[dict[str, Any]]) -> dict[str, Any]:
        r = httpx.post(f"{server}/forecast", json={"model": "pbcseq", "series": series}, timeout=60)
        assert r.status_code == 200, r.text
        return {f["id"]: f for f in r.json()["forecasts"]}

    alone = post([target])[target["id"]]
    in_64 = post(patients)[target["id"]]
    rng = np.random.default_rng(0)
    requests = [
        [target] + [patients[i] for i in rng.choice(np.r_[0:5, 6:64], size=7, replace=False)] for _ in range(12)
    ]
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        concurrent_results = [res[target["id"]] for res in pool.map(post, requests)]
    for other in [in_64, *concurrent_results]:
        np.testing.assert_allclose(other["mean"], alone["mean"], rtol=1e-4, atol=1e-6)
        for level in ("0.1", "0.5", "0.9"):
            np.testing.assert_allclose(other["quantiles"][level], alone["quantiles"][level], rtol=1e-4, atol=1e-6)


def test_python_client_long_frame(server: str) -> None:
    frame = read_pbcseq()[["id", "time", "bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime"]]
    frame = frame[frame["id"] <= 3]
    with LatentcastClient(server) as client:
        fc = client.forecast(frame, query_times=[400.0, 800.0], model="pbcseq", quantiles=(0.1, 0.9))
    assert list(fc.columns) == ["id", "time", "channel", "point", "mean", "q0.1", "q0.9"]
    assert len(fc) == 3 * 2 * 7 and (fc["q0.1"] <= fc["q0.9"]).all()
    assert fc["time"].tolist()[:7] == [400.0] * 7


def test_arrow_and_json_transports_agree(server: str) -> None:
    frame = read_pbcseq()[["id", "time", "bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime"]]
    frame = frame[frame["id"] <= 40]
    queries = {sid: [float(t) + 200.0, float(t) + 700.0] for sid, t in frame.groupby("id")["time"].max().items()}
    with LatentcastClient(server, chunk_series=16) as client:  # three requests each way
        arrow_fc = client.forecast(frame, queries, model="pbcseq")
        json_fc = client.forecast(frame, queries, model="pbcseq", transport="json")
    assert len(arrow_fc) == len(json_fc) == 40 * 2 * 7
    assert arrow_fc["id"].astype(str).tolist() == json_fc["id"].astype(str).tolist()
    for col in ("time", "mean", "q0.1", "q0.5", "q0.9"):
        np.testing.assert_allclose(arrow_fc[col].to_numpy(float), json_fc[col].to_numpy(float), rtol=1e-6)


def test_forecast_cli_writes_csv_and_png(server: str, tmp_path) -> None:
    obs = read_pbcseq()[["id", "time", "bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime"]]
    obs[obs["id"] <= 2].to_csv(tmp_path / "obs.csv", index=False)
    cmd = [
        sys.executable,
        "-m",
        "latentcast",
        "forecast",
        "--url",
        server,
        "--input",
        str(tmp_path / "obs.csv"),
        "--query-times",
        "100,500,1000",
        "--output",
        str(tmp_path / "fc.csv"),
        "--plot",
        str(tmp_path / "fc.png"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    fc = pd.read_csv(tmp_path / "fc.csv")
    assert len(fc) == 2 * 3 * 7 and {"mean", "q0.1", "q0.5", "q0.9"} <= set(fc.columns)
    assert (tmp_path / "fc.png").read_bytes()[:4] == b"\x89PNG"
    assert "wrote " + str(tmp_path / "fc.png") + ": series 1, 2 (the first 2 of 2; --series to choose)" in res.stderr
    # one series, one query time (a point and its interval), the values that happened beside it
    obs[obs["id"] == 2].to_csv(tmp_path / "actual.csv", index=False)
    one = [
        *cmd[:-6],
        "--query-times",
        "1000",
        "--output",
        str(tmp_path / "one.csv"),
        "--plot",
        str(tmp_path / "one.png"),
    ]
    res = subprocess.run(
        [*one, "--series", "2", "--actuals", str(tmp_path / "actual.csv")], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().endswith("one.png: series 2") and (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    res = subprocess.run([*one, "--series", "7"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "series ['7'] are not in the forecast" in res.stderr


def _readme_blocks(kind: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{kind}\n(.*?)```", text, re.S)


def test_the_readme_http_snippets_run_as_written(server: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's curl example, Python client and `latentcast forecast` line, verbatim but for the
    server's address (the README's runs on port 8000)."""
    monkeypatch.chdir(tmp_path)
    here = server.removeprefix("http://")
    (curl,) = [b for b in _readme_blocks("bash") if b.startswith("curl ")]
    out = subprocess.run(["bash", "-c", curl.replace("localhost:8000", here)], capture_output=True, text=True)
    answer = json.loads(out.stdout)
    assert out.returncode == 0 and answer["model"]["name"] == "pbcseq", out.stdout[:500]
    (fc,) = answer["forecasts"]
    assert fc["id"] == "patient-17" and len(fc["mean"]) == 2 and set(fc["quantiles"]) == {"0.1", "0.5", "0.9"}
    python = _readme_blocks("python")
    setup = python[0].split("model = latentcast.load")[0]  # the In Python section's imports and `obs`
    (client,) = [b for b in python if "LatentcastClient" in b]
    scope: dict[str, Any] = {}
    exec(compile(setup + client.replace("http://127.0.0.1:8000", server), "README.md", "exec"), scope)
    assert len(scope["fc"]) == 2 * 2 * 7 and np.isfinite(scope["fc"]["mean"]).all()
    scope["obs"].to_csv("obs.csv", index=False)  # as the README says
    (line,) = [b for b in _readme_blocks("bash") if b.startswith("latentcast forecast") and "--engine ray" not in b]
    cli = [sys.executable, "-m", *line.replace("http://127.0.0.1:8000", server).split()]
    res = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(pd.read_csv("fc.csv")) == 2 * 2 * 7 and Path("fc.png").read_bytes()[:4] == b"\x89PNG"


def test_a_server_whose_model_cannot_load_exits_at_once_with_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    cmd = [
        sys.executable,
        "-m",
        "latentcast",
        "serve",
        "--model",
        str(bad),
        "--port",
        str(free_port()),
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("latentcast serve: could not load the models: CheckpointError: ") and str(bad) in last


def test_client_and_cli_choose_the_tolerance_and_see_its_cost(server: str, tmp_path) -> None:
    """Both transports carry the tolerance and bring back what was used and what it cost."""
    obs = read_pbcseq()[["id", "time", "bili", "chol", "albumin", "alk.phos", "ast", "platelet", "protime"]]
    obs = obs[obs["id"] <= 3]
    with LatentcastClient(server) as client:
        fast = client.forecast(obs, [4000.0, 5000.0], model="pbcseq", solver="fast")
        tight = client.forecast(obs, [4000.0, 5000.0], model="pbcseq", rtol=1e-6, atol=1e-7, transport="json")
        tight_arrow = client.forecast(obs, [4000.0, 5000.0], model="pbcseq", rtol=1e-6, atol=1e-7)
    assert fast.attrs["solver"]["rtol"] == 1e-2 and tight.attrs["solver"]["rtol"] == 1e-6
    assert set(fast.attrs["nfe"]) == {1, 2, 3}
    assert all(fast.attrs["nfe"][k] < tight.attrs["nfe"][k] for k in (1, 2, 3))
    assert tight_arrow.attrs["nfe"] == pytest.approx(tight.attrs["nfe"], abs=0.01)  # JSON: 2 decimals
    np.testing.assert_allclose(tight_arrow["mean"], tight["mean"], rtol=1e-5)
    obs.to_csv(tmp_path / "obs.csv", index=False)
    cmd = [sys.executable, "-m", "latentcast", "forecast", "--url", server, "--input", str(tmp_path / "obs.csv")]
    cmd += ["--query-times", "4000,5000", "--output", str(tmp_path / "fc.csv"), "--rtol", "1e-6", "--atol", "1e-7"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "rtol 1e-06 atol 1e-07" in res.stderr and "evaluations per trajectory" in res.stderr
    np.testing.assert_allclose(pd.read_csv(tmp_path / "fc.csv")["mean"], tight["mean"], rtol=1e-5)
    res = subprocess.run([*cmd[:-4], "--rtol", "1e-12"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "422" in res.stderr and "LATENTCAST_MIN_RTOL" in res.stderr


def _physionet_test_records(n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`n` records of the benchmark's test split (t < 24 h observed, t >= 24 h queried) when the
    challenge archives are beside the repository (../shared/data); otherwise `n` records written here
    with the challenge's channels and rhythm (hourly vitals, a few labs, descriptors at 00:00)."""
    root = ROOT.parent / "shared" / "data" / "physionet2012"
    obs, query = [], []
    if root.is_dir():
        series = read_records(root)
        test = set(protocol_split(series)[2])
        for s in [s for s in series if s.id in test and (s.n_context or len(s)) < len(s)][:n]:
            c, hours = int(s.n_context or 0), s.times / TIME.scale  # model time → hours
            obs.append(pd.DataFrame(s.values[:c], columns=PHYSIONET_CHANNELS).assign(id=s.id, time=hours[:c]))
            query.append(pd.DataFrame({"id": s.id, "time": hours[c:]}))
        return pd.concat(obs), pd.concat(query)
    rng = np.random.default_rng(0)
    for k in range(n):
        hours = np.concatenate([[0.0], np.sort(rng.choice(np.arange(1, 1440), 30, replace=False)) / 60.0])  # minutes
        v = np.full((len(hours), len(PHYSIONET_CHANNELS)), np.nan)
        col = {c: i for i, c in enumerate(PHYSIONET_CHANNELS)}
        v[0, [col["Age"], col["Gender"], col["Height"], col["ICUType"], col["Weight"]]] = [60 + k, k % 2, -1, 2, 80]
        v[1:, col["HR"]] = 85 + 10 * rng.standard_normal(len(hours) - 1)
        v[1:, col["MAP"]] = 80 + 8 * rng.standard_normal(len(hours) - 1)
        v[1::6, col["GCS"]] = 13
        v[2::8, col["Glucose"]] = 140
        obs.append(pd.DataFrame(v, columns=PHYSIONET_CHANNELS).assign(id=f"r{k}", time=hours))
        query.append(pd.DataFrame({"id": f"r{k}", "time": [24.5, 30.0, 47.9]}))
    return pd.concat(obs), pd.concat(query)


def test_the_physionet2012_model_answers_as_in_process(server: str) -> None:
    """The embedded PhysioNet 2012 model, over HTTP (Arrow and JSON), gives the in-process forecasts."""
    obs, query = _physionet_test_records(4)
    local = latentcast.load("physionet2012", device="cpu", num_samples=32).predict(obs, query, quantiles=(0.1, 0.9))
    with LatentcastClient(server) as client:
        info = client.model_info("physionet2012")
        arrow = client.forecast(obs, query, model="physionet2012", quantiles=(0.1, 0.9))
        json_fc = client.forecast(obs, query, model="physionet2012", quantiles=(0.1, 0.9), transport="json")
    assert info["channels"] == list(PHYSIONET_CHANNELS) and info["time_unit"] == "hour"
    assert len(arrow) == len(query) * len(PHYSIONET_CHANNELS) and np.isfinite(arrow["mean"]).all()
    for served in (arrow, json_fc):
        key = ["id", "time", "channel"]
        a, b = served.sort_values(key).reset_index(drop=True), local.sort_values(key).reset_index(drop=True)
        assert (a["id"].astype(str) == b["id"].astype(str)).all() and np.allclose(a["time"], b["time"])
        for col in ("mean", "q0.1", "q0.9"):
            np.testing.assert_allclose(a[col], b[col], rtol=1e-3, atol=1e-6)


def _cli(server: str, table: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "latentcast", "forecast", "--url", server, "--input", str(table)]
    return subprocess.run([*cmd, "--query-times", "4000", *extra], capture_output=True, text=True, timeout=120)


def test_the_cli_reads_tables_as_they_are_written(server: str, tmp_path: Path) -> None:
    """Ids as text, a header naming a column twice, a column that is not a channel, a channel the table
    lacks, a header with no rows, refused series with --on-error skip: `latentcast forecast` as typed."""
    rows = "1,0,1.2,3.4\n1,365,1.5,3.3\n01,0,0.8,3.9\n01,200,0.9,3.8\n"
    (tmp_path / "ok.csv").write_text("id,time,bili,albumin\n" + rows)
    res = _cli(server, tmp_path / "ok.csv", "--output", str(tmp_path / "fc.csv"))
    assert res.returncode == 0, res.stderr
    fc = pd.read_csv(tmp_path / "fc.csv", dtype={"id": str})
    assert sorted(set(fc["id"])) == ["01", "1"]  # two patients, not one
    assert "warning: channels not in the table, sent as never observed: chol, alk.phos" in res.stderr
    for name, text, message in (
        ("twice.csv", "id,time,bili,bili\n" + rows, "names column 'bili' more than once"),
        ("unknown.csv", "id,time,bili,Albumin\n" + rows, "columns ['Albumin'] are not channels of the model"),
        ("empty.csv", "id,time,bili\n", "has a header but no rows"),
    ):
        (tmp_path / name).write_text(text)
        res = _cli(server, tmp_path / name)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and len(lines) == 1 and message in lines[0], res.stderr
    res = _cli(server, tmp_path / "unknown.csv", "--extra-columns", "ignore")
    assert res.returncode == 0, res.stderr
    (tmp_path / "bad.csv").write_text("id,time,bili,albumin\n" + rows + "x,0,-1.0,3.0\n")
    res = _cli(server, tmp_path / "bad.csv")
    assert res.returncode == 1 and "error 422" in res.stderr and "series 'x'" in res.stderr
    res = _cli(server, tmp_path / "bad.csv", "--on-error", "skip", "--output", str(tmp_path / "some.csv"))
    assert res.returncode == 0 and "refused: series 'x': values[0]: [0] = -1" in res.stderr, res.stderr
    assert sorted(set(pd.read_csv(tmp_path / "some.csv", dtype={"id": str})["id"])) == ["01", "1"]
