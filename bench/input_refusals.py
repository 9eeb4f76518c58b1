"""How fast a real server answers the inputs it must refuse (issue 26), the figures the HTTP tests leave out.

A model with doses, an infusion rate (a level) and weight (bench/pkpd.py's infusion table, trained here
for a few epochs, or --model) is served by `latentcast serve` on 127.0.0.1 with
LATENTCAST_MAX_REQUEST_SECONDS=1. Each case is sent three times; the table gives its status and the
fastest and slowest wall time:
  float32 overflow     a static or a dose beyond float32 (refused before any solve)
  beyond the model     a dose over 5x the training maximum, a static 10 ranges out (refused, the other series
                       answered)
  event-heavy          20 series x 9,000 rate changes x 1,000 query times (refused by the cost model, 413)

    python -m bench.input_refusals [--model RUN/best.pt]   # writes bench/results/input_refusals.md
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import latentcast
from bench import results
from bench.pkpd import make_pkpd
from bench.server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"id": "a", "timestamps": [1.0, 5.0], "values": [[2.0], [1.5]], "query_times": [10.0],
        "event_times": [0.0, 8.0], "event_values": [[200.0, None], [100.0, 20.0]], "static": [70.0]}  # fmt: skip


def cases() -> dict[str, dict[str, Any]]:
    queries = [6.0 + 0.05 * k for k in range(1000)]
    times, values = [-10.0 + 0.001 * k for k in range(9000)], [[None, float(k % 2) * 40.0] for k in range(9000)]
    heavy = [{**GOOD, "id": f"h{i}", "query_times": queries, "event_times": times, "event_values": values}
             for i in range(20)]  # fmt: skip
    other = {**GOOD, "id": "b"}
    return {
        "static beyond float32": {"series": [{**GOOD, "static": [1e308]}]},
        "dose beyond float32": {"series": [{**GOOD, "event_values": [[1e308, None], [1.0, None]]}]},
        "dose over 5x training, beside a good series": {
            "series": [{**GOOD, "event_values": [[200.0, None], [30000.0, None]]}, other], "on_error": "skip"},
        "static 10 ranges out, beside a good series": {
            "series": [{**GOOD, "static": [1e6]}, other], "on_error": "skip"},
        "20 series x 9,000 rate changes x 1,000 queries": {"series": heavy},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            recipe = {"model": {"latent_dim": 4, "encoder_hidden": 16, "dynamics_hidden": 16}}
            fitted = latentcast.fit(make_pkpd(100, seed=1, infusion=True), ["conc"], events=["dose"], levels=["rate"],
                                    static=["weight"], time_unit="hour", epochs=25, config=recipe, quiet=True,
                                    device="cpu")  # fmt: skip
            model = fitted.save(Path(tmp) / "drip.pt")
        env = {"LATENTCAST_MODELS": json.dumps([str(model)]), "LATENTCAST_MAX_REQUEST_SECONDS": "1"}
        rows: list[dict[str, Any]] = []
        with ServerProcess(env, "cpu") as srv:
            for name, body in cases().items():
                walls, status, msg = [], 0, ""
                for _ in range(3):
                    t0 = time.perf_counter()
                    resp = httpx.post(f"{srv.url}/forecast", json=body, timeout=120.0)
                    walls.append(time.perf_counter() - t0)
                    status = resp.status_code
                    answer = resp.json()
                    errors = answer.get("errors") or []
                    msg = errors[0]["msg"] if errors else str(answer.get("detail", ""))
                answered = [f["id"] for f in answer.get("forecasts", [])]
                rows.append({"case": name, "status": status, "answered": answered, "min_s": min(walls),
                             "max_s": max(walls), "msg": msg[:140]})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    r = {"device": results.machine("cpu"), "commit": results.commit(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    lines = [
        "# Refusing inputs the model cannot take: how fast (issue 26)",
        "",
        f"A real `latentcast serve` on {r['device']}, commit {r['commit']}, {r['date']}; "
        "LATENTCAST_MAX_REQUEST_SECONDS=1. Three sends per case.",
        "",
        "| case | status | answered | wall time (fastest – slowest) | message |",
        "|---|---|---|---|---|",
    ]
    for x in rows:
        lines.append(f"| {x['case']} | {x['status']} | {', '.join(x['answered']) or '-'} | "
                     f"{1000 * x['min_s']:.0f}–{1000 * x['max_s']:.0f} ms | {x['msg']} |")  # fmt: skip
    lines += ["", "Reproduce: `python -m bench.input_refusals`."]
    results.write(args.out, "input_refusals", r, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
