"""A board of an incomplete grid says so in its first lines: N of M cells, which are
missing (grouped), and the command that runs them (harness/coverage.py)."""

from __future__ import annotations

import sqlite3

import pytest

from harness import hookimpl
from harness.api import Distiller
from harness.cli import main
from harness.coverage import Plan, coverage, missing_lines
from harness.leaderboard import write_leaderboards
from harness.store import Store
from tests.test_leaderboard import rec


def planned(method: str, seed: int, student: str = "dcnn:student") -> dict:
    return {
        "id": f"{method}-{seed}-{student}",
        "dataset": "movies",
        "task": "rating",
        "teacher": "dcnn:teacher",
        "student": student,
        "method": method,
        "seed": seed,
    }


def test_missing_and_failed_cells_are_counted_grouped_and_the_command_given(tmp_path):
    methods = ["DCNN", "KD", "RD", "CD-TG"]
    plan = Plan(
        grid="g",
        command="harness run --grid g.yaml --out runs/g",
        cells=[planned(m, s) for m in methods for s in range(5)],
        skipped=5,
    )
    records = [rec("DCNN", s, 0.9, distiller="none") for s in range(5)]
    records += [rec("KD", s, 0.8) for s in range(2)]  # then the run was interrupted
    records.append(dict(rec("KD", 2, 0.8), status="failed", reason="CellError: loss became nan"))
    # a skipped (incompatible) cell is in the store but not in the plan: never missing
    records.append(dict(rec("SAD", 0, 0.0), status="skipped", reason="needs features"))
    cov = coverage(plan, {r["id"]: r["status"] for r in records})
    assert (cov.done, cov.total, len(cov.failed), len(cov.not_run)) == (7, 20, 1, 12)
    assert missing_lines(cov) == [
        "- dcnn:student, seed 2: KD (failed)",
        "- dcnn:student, seeds 0–4: RD, CD-TG (not run)",
        "- dcnn:student, seeds 3, 4: KD (not run)",
    ]
    write_leaderboards(records, [], tmp_path / "lb", plans=[plan])
    md = (tmp_path / "lb/movies__rating.md").read_text()
    head = md.splitlines()[:12]
    assert head[0] == "# movies — rating"
    assert head[2].startswith(
        "**Incomplete: 7 of 20 cells** of grid g are in this board (1 failed, 12 not run;"
    )
    assert "- dcnn:student, seeds 0–4: RD, CD-TG (not run)" in head
    assert (
        "Complete them (finished cells are kept): `harness run --grid g.yaml --out runs/g --retry-failed`"
        in head
    )
    index = (tmp_path / "lb/README.md").read_text()
    assert "**Incomplete: 7 of 20 cells** of grid g are in these boards" in index
    assert "- movies — rating: dcnn:student, seed 2: KD (failed)" in index
    # complete: no warning, the Grid line says so
    done = [dict(rec(c["method"], c["seed"], 0.8), id=c["id"]) for c in plan.cells]
    write_leaderboards(done, [], tmp_path / "lb2", plans=[plan])
    md = (tmp_path / "lb2/movies__rating.md").read_text()
    assert "Incomplete" not in md and "Grid: g (complete: 20 of 20 cells)." in md
    # no plan known (an older database): the board cannot count the grid; failed cells still show
    write_leaderboards(records, [], tmp_path / "lb3", plans=None)
    md = (tmp_path / "lb3/movies__rating.md").read_text()
    assert md.splitlines()[2].startswith("**Incomplete: 1 of the 8 cells stored for this board failed**")
    assert "Rerun them: `harness run --grid g.yaml --retry-failed`" in md
    assert "Grid: g (whether the grid is complete is not known" in md


class Interrupt(Distiller):
    name = "interrupt"
    description = "test: Ctrl-C in the middle of a cell"
    tasks = frozenset({"rating"})

    def loss(self, step):
        raise KeyboardInterrupt


class NaN(Distiller):
    name = "nan-loss"
    description = "test: a loss that is NaN"
    tasks = frozenset({"rating"})

    def loss(self, step):
        return step.task_loss * float("nan")


class ClassificationOnly(Distiller):
    name = "cls-only"
    description = "test: incompatible with rating"
    tasks = frozenset({"classification"})


class Plugin:
    @hookimpl
    def harness_register_distillers(self, register):
        register(Interrupt)
        register(NaN)
        register(ClassificationOnly)


@pytest.mark.slow
def test_an_interrupted_grid_with_failed_cells_boards_say_what_is_missing(
    write_grid, tmp_path, monkeypatch, capsys, register
):
    """Cells run in order: none and nan-loss for seeds 0 and 1 (nan-loss fails), then
    Ctrl-C in the first interrupt cell; cls-only is skipped as incompatible. The board
    written at the end of the interrupted run, and boards rebuilt from the database
    alone or against the grid file, all say 2 of 6 cells and what to run."""
    register(Plugin(), "coverage-test")
    monkeypatch.chdir(tmp_path)
    grid = write_grid(distillers="[none, nan-loss, interrupt, cls-only]", seeds="[0, 1]")
    assert main(["run", "--grid", str(grid), "--out", "out", "--no-progress"]) == 130
    capsys.readouterr()
    board = "imdb-movies_features=numerical__rating.md"
    want = [
        "**Incomplete: 2 of 6 cells** of grid tiny are in this board (2 failed, 2 not run;",
        "- dcnn(channels=[2,4], hidden=4), seeds 0, 1: NAN-LOSS (failed)",
        "- dcnn(channels=[2,4], hidden=4), seeds 0, 1: INTERRUPT (not run)",
        f"Complete them (finished cells are kept): `harness run --grid {grid} --out out --retry-failed`",
    ]
    for folder in ("out/leaderboards", "from-db", "from-grid"):
        if folder == "from-db":
            assert main(["leaderboard", "--results", "out/results.db", "--out", folder]) == 0
        elif folder == "from-grid":
            assert (
                main(["leaderboard", "--results", "out/results.db", "--grid", str(grid), "--out", folder])
                == 0
            )
        head = (tmp_path / folder / board).read_text().split("\nGrid: ")[0]
        for line in want:
            assert any(h.startswith(line) for h in head.splitlines()), (folder, line, head)
        assert "cls-only" not in head.lower()  # skipped: not missing
    head = (tmp_path / "from-grid" / board).read_text()
    assert f"cells of the grid from the grid file {grid})" in head
    # a database written before plans were recorded reads as no plan (the board then
    # says the count is not known: the first test)
    with sqlite3.connect(tmp_path / "out/results.db") as db:
        db.execute("DROP TABLE plans")
    old = Store.open_existing(tmp_path / "out/results.db")
    assert old.plans() == [] and len(old.records()) == 6  # (4 finished, 2 skipped)
    old.close()


def test_section_without_grid_is_refused(tmp_path, capsys):
    assert main(["leaderboard", "--results", "x.db", "--out", str(tmp_path), "--section", "cpu"]) == 2
    assert "--section needs --grid" in capsys.readouterr().err
