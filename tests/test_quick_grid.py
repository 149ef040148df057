"""The shipped quick grid, in full, as a user runs it (the issue's first must-show)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_grid_runs_and_its_leaderboard_has_error_size_energy(tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["run", "--grid", str(ROOT / "grids/quick.yaml"), "--out", str(out), "-j", "2"]) == 0
    assert "ran 24 cells: 24 ok, 0 failed" in capsys.readouterr().out
    for group in ("numerical", "social", "categorical", "textual"):
        md = (out / f"leaderboards/imdb-movies_features={group}__rating.md").read_text()
        header = next(line for line in md.splitlines() if line.startswith("| Method"))
        for col in ("MAE", "MSE", "Params", "Train J", "Meter"):
            assert col in header
        rows = [line for line in md.splitlines() if line.startswith(("| DCNN", "| KD", "| Teacher"))]
        assert len(rows) == 3
        for row in rows:
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert re.match(r"^\d+\.\d+", cells[2])  # MAE
            assert re.match(r"^[\d.]+", cells[-5])  # Train J
            assert cells[-3] == "cpu-estimate" or cells[-3] in ("rapl", "nvml-energy")
    assert main(["run", "--grid", str(ROOT / "grids/quick.yaml"), "--out", str(out)]) == 0
    assert "0 to run; 24 already finished, skipped" in capsys.readouterr().out
