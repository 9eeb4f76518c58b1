from __future__ import annotations

import json

import pytest

from bench import results


def test_write_puts_figures_and_table_side_by_side(tmp_path) -> None:
    results.write(tmp_path / "out", "solver_cpu", {"rows": [1, 2]}, "# table\n")
    assert json.loads((tmp_path / "out" / "solver_cpu.json").read_text()) == {"rows": [1, 2]}
    assert (tmp_path / "out" / "solver_cpu.md").read_text() == "# table\n"


def test_commit_and_machine_stamps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_COMMIT", "abc1234")  # a tree copied without .git names its commit
    assert results.commit() == "abc1234"
    monkeypatch.delenv("BENCH_COMMIT")
    assert results.commit()  # this checkout's commit, or "unknown" outside git
    assert results.machine("cpu").startswith("CPU (") and "threads" in results.machine("cpu")
