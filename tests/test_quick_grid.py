"""The shipped quick grid, in full, as a user runs it (the issue's first must-show)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_grid_runs_and_its_leaderboard_has_error_size_energy(tmp_path, capsys):
    # the shipped grid with 2 of its 5 seeds (the only change): its 40 cells would make this
    # the suite's slowest test by far; 2 seeds still exercise the seed-averaged tests
    text = (ROOT / "grids/quick.yaml").read_text()
    assert re.search(r"^seeds: \[0, 1, 2, 3, 4\]", text, re.M)
    grid = tmp_path / "quick.yaml"
    grid.write_text(re.sub(r"^seeds: .*$", "seeds: [0, 1]", text, flags=re.M))
    out = tmp_path / "quick"
    assert main(["run", "--grid", str(grid), "--out", str(out), "-j", "2"]) == 0
    assert "ran 16 cells: 16 ok, 0 failed" in capsys.readouterr().out
    for group in ("numerical", "social", "categorical", "textual"):
        md = (out / f"leaderboards/imdb-movies_features={group}__rating.md").read_text()
        compact, details = md.split("## Every column")
        # the default table: at most 12 columns, its plot embedded and beside the markdown
        head = next(line for line in compact.splitlines() if line.startswith("| Method"))
        assert len(head.strip("|").split("|")) <= 12
        plots = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", compact)
        assert len(plots) == 1 and (out / "leaderboards" / plots[0]).is_file()
        assert (out / "leaderboards" / plots[0].replace(".png", ".svg")).is_file()
        md = details  # the whole table, every column
        header = next(line for line in md.splitlines() if line.startswith("| Method"))
        for col in ("MAE", "MSE", "Params", "Train J", "Meter"):
            assert col in header
        rows = [line for line in md.splitlines() if line.startswith(("| DCNN", "| KD", "| Teacher"))]
        assert len(rows) == 3
        names = [c.strip() for c in header.strip("|").split("|")]
        for row in rows:
            cells = dict(zip(names, (c.strip() for c in row.strip("|").split("|")), strict=True))
            assert re.match(r"^\d+\.\d+", cells["MAE"])
            assert re.match(r"^[\d.]+", cells["Train J"])
            assert cells["Meter"] in ("cpu-estimate", "rapl", "nvml-energy")
            if not row.startswith("| Teacher"):  # the inference window and the cell's peak memory
                assert re.match(r"^[\d,]+(–[\d,]+)? \([\d.]+ s\)$", cells["Infer passes (window)"])
                assert re.match(r"^[\d,]+ ± ", cells["Peak RSS MiB"])
            cells = list(cells.values())
            if not row.startswith("| DCNN"):  # Δ vs student with its CI, per-example test
                assert re.match(r"^[▲▼]? ?[+-][\d.e-]+ \[[+-][\d.e-]+, [+-][\d.e-]+\]$", cells[5]), cells[5]
                assert re.match(r"^[\d.e-]+$", cells[6]) and re.match(r"^\d+/\d+/\d+$", cells[8])
        assert "p (Wilcoxon, Holm)" in header
        assert "Teacher check" in "\n".join(compact.splitlines()[:4])
    overview = (out / "leaderboards/README.md").read_text()
    assert len([x for x in overview.splitlines() if x.startswith("| [imdb-movies")]) == 4
    assert main(["export", "--results", str(out / "results.db"), "--format", "csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0].startswith("id,grid,status,") and len(csv) == 1 + 16  # a header, one row per cell
    assert main(["run", "--grid", str(grid), "--out", str(out)]) == 0
    assert "0 to run; 16 already finished, skipped" in capsys.readouterr().out
