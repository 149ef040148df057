"""`harness run` end to end on a tiny grid, resume, failures, and every bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.api import Distiller
from harness.cli import main
from harness.hookspecs import hookimpl


def run(*argv: str) -> int:
    return main(list(argv))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("harness: error: ")
    return err[0]


@pytest.mark.slow
def test_tiny_grid_end_to_end_then_rerun_runs_nothing(write_grid, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(distillers="[none, kd]", seeds="[0, 1]")
    assert run("run", "--grid", str(grid)) == 0
    out = capsys.readouterr().out
    assert "4 to run" in out and "ran 4 cells: 4 ok, 0 failed" in out
    lb = tmp_path / "runs/tiny/leaderboards"
    md = (lb / "imdb-movies_features=numerical__rating.md").read_text()
    for needle in (
        "| MAE",
        "| MSE",
        "Params",
        "Train J",
        "cpu-estimate",
        "Teacher (dcnn(channels=[4,8], hidden=8))",
        "| KD",
        "| DCNN",
        "**estimate**",
        "Hardware:",
        "Regenerate: `harness run",
    ):
        assert needle in md, needle
    # the teacher was trained once per seed and reused by the KD cells
    db = sqlite3.connect(tmp_path / "runs/tiny/results.db")
    assert db.execute("select count(*) from teachers").fetchone()[0] == 2
    assert len(list((tmp_path / "runs/tiny/teachers").glob("*.pt"))) == 2
    rec = json.loads(db.execute("select record from cells where distiller='kd'").fetchone()[0])
    assert rec["status"] == "ok" and rec["energy"]["train_j"] > 0
    assert rec["energy"]["inference_passes"] >= 1 and rec["energy"]["inference_window_s"] > 0
    # the cell trained its teacher: its peak is above what the process held at its start
    assert rec["memory"]["peak_rss_mib"] > rec["memory"]["start_rss_mib"] > 0
    assert rec["memory"]["cuda_max_allocated_mib"] is None
    assert rec["size"]["params"] < rec["size"]["teacher_params"]
    assert rec["env"]["versions"]["torch"] == torch.__version__
    # the same command again runs nothing and says so
    assert run("run", "--grid", str(grid)) == 0
    out = capsys.readouterr().out
    assert "0 to run; 4 already finished, skipped" in out
    assert "ran 0 cells" in out


class NaNDistiller(Distiller):
    name = "nan-loss"
    description = "test: a loss that is NaN"
    tasks = frozenset({"rating"})

    def loss(self, step):
        return step.task_loss * float("nan")


class Exploding(Distiller):
    name = "explode"
    description = "test: raises"
    tasks = frozenset({"rating"})

    def loss(self, step):
        raise RuntimeError("boom inside the distiller")


class FailingPlugin:
    @hookimpl
    def harness_register_distillers(self, register):
        register(NaNDistiller)
        register(Exploding)


@pytest.mark.slow
def test_failing_cells_are_recorded_and_the_rest_go_on(write_grid, tmp_path, monkeypatch, capsys, register):
    register(FailingPlugin(), "failing")
    monkeypatch.chdir(tmp_path)
    grid = write_grid(distillers="[none, nan-loss, explode]")
    assert run("run", "--grid", str(grid)) == 1
    out = capsys.readouterr().out
    assert "1 ok, 2 failed" in out
    db = sqlite3.connect(tmp_path / "runs/tiny/results.db")
    rows = dict(db.execute("select distiller, status || ': ' || coalesce(reason, '') from cells"))
    assert rows["none"] == "ok: "
    assert rows["nan-loss"].startswith("failed: CellError: loss became nan in epoch 1")
    assert rows["explode"] == "failed: RuntimeError: boom inside the distiller"
    md = (tmp_path / "runs/tiny/leaderboards/imdb-movies_features=numerical__rating.md").read_text()
    assert "Failed cells (2" in md
    # a plain rerun leaves failed cells alone; --retry-failed reruns exactly them
    assert run("run", "--grid", str(grid)) == 0
    assert "2 failed earlier (rerun them with --retry-failed)" in capsys.readouterr().out
    assert run("run", "--grid", str(grid), "--retry-failed") == 1
    assert "2 to run" in capsys.readouterr().out
    assert run("list", "--results", "runs/tiny/results.db", "--status", "failed") == 0
    listed = capsys.readouterr().out
    assert "nan-loss" not in listed or "failed" in listed
    assert "2 failed" in listed


def test_dry_run_prints_plan_with_skips_and_writes_nothing(write_grid, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(
        text="""
        datasets: [{name: imdb-movies, features: [numerical, social]}]
        teacher: [{model: dcnn, preset: teacher}, {model: wrn, preset: wrn-16-2}]
        student: {model: dcnn, preset: student}
        distillers: [none, kd]
        seeds: 2
    """
    )
    assert run("run", "--grid", str(grid), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "16 cells: 8 to run, 8 skipped (incompatible or data missing)" in out
    assert "skip: teacher model 'wrn' does not support the rating task" in out
    assert not (tmp_path / "runs").exists()
    header = out.splitlines()[0].split()
    # a column per dimension that varies, none for those that do not
    assert header == ["cell", "dataset", "teacher", "method", "seed", "action"], header
    assert "in every cell: task rating; student dcnn:student; epochs 10;" in out
    rows = [line.split() for line in out.splitlines()[2:18]]
    assert {r[3] for r in rows} == {"DCNN", "KD"}, rows


def test_dry_run_shows_each_method_with_its_hyper_parameters_and_overrides(monkeypatch, capsys):
    """Must show: the dry-run of grids/cd-ml100k.yaml --section cpu shows λ for every
    cd-tg and cd-sg row (0.5 and 0.1 apart), and RD's per-model override K=15 for CDAE,
    each label as `run` prints it."""
    grid = Path(__file__).resolve().parents[1] / "grids" / "cd-ml100k.yaml"
    assert run("run", "--grid", str(grid), "--section", "cpu", "--dry-run") == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line[:8].isalnum() and line.endswith(" run")]
    cd = [r for r in rows if " CD-TG" in r or " CD-SG" in r]
    assert cd and all("lambda_=0.5" in r or "lambda_=0.1" in r for r in cd), cd
    for label in ("CD-TG(lambda_=0.5", "CD-TG(lambda_=0.1", "CD-SG(lambda_=0.5", "CD-SG(lambda_=0.1"):
        assert any(label in r for r in cd), label
    assert any("RD(rho=0.5,K=15)" in r for r in rows)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "datasets: [imdb-movies]\nteacher: {model: dcnn}\nstudent: {model: dcnn}\n"
            "distillers: [none]\nbudjet: {epochs: 1}\n",
            "grid.yaml:5: budjet: unknown key 'budjet' (closest: budget)",
        ),
        (
            "datasets: [imdb-movies]\nteacher: {model: dcnn}\nstudent: {model: dcnn}\n"
            "distillers: [none]\nbudget: {epochs: many}\n",
            "grid.yaml:5: budget.epochs: expected int, got str 'many'",
        ),
        (
            "datasets: [imdb-movies]\nteacher: {model: dcnn}\nstudent: {model: dcnn}\n"
            "distillers: [none, kdd]\n",
            "grid.yaml:4: distillers[1]: unknown distiller 'kdd' (closest: kd)",
        ),
        (
            "datasets: [imdb-moovies]\nteacher: {model: dcnn}\nstudent: {model: dcnn}\ndistillers: [none]\n",
            "grid.yaml:1: datasets[0]: unknown dataset 'imdb-moovies' (closest: imdb-movies)",
        ),
        (
            "datasets: [imdb-movies]\nteacher: {model: dcn}\nstudent: {model: dcnn}\ndistillers: [none]\n",
            "grid.yaml:2: teacher: unknown model 'dcn' (closest: dcnn)",
        ),
        (
            "datasets:\n  - name: imdb-movies\n    path: /no/such/movies.json\n"
            "teacher: {model: dcnn}\nstudent: {model: dcnn}\ndistillers: [none]\n",
            "grid.yaml:2: datasets[0].path: file not found: /no/such/movies.json",
        ),
        (
            "datasets:\n  - name: imdb-movies\n    feature: social\n"
            "teacher: {model: dcnn}\nstudent: {model: dcnn}\ndistillers: [none]\n",
            "unknown option 'feature' for dataset 'imdb-movies' (closest: features)",
        ),
        (
            "datasets: [imdb-movies]\nteacher: {model: dcnn}\nstudent: {model: dcnn}\n"
            "distillers: [{name: kd, alpha: high}]\n",
            "grid.yaml:4: distillers[0].alpha: expected float/int, got str 'high'",
        ),
        (
            "datasets: [imdb-movies]\nteacher: {model: dcnn}\nstudent: {model: dcnn}\n"
            "distillers: [none]\nseeds: [0, zero]\n",
            "grid.yaml:5: seeds[1]: expected an int seed, got 'zero'",
        ),
        (
            "datasets: [imdb-movies]\nteacher: {model: dcnn, preset: huge}\nstudent: {model: dcnn}\n"
            "distillers: [none]\n",
            "model 'dcnn' has no preset 'huge' (presets: teacher, student)",
        ),
        (
            "datasets: [imdb-movies]\nteacher: {model: dcnn}\nstudent: {model: dcnn}\n",
            "grid.yaml:1: missing required key 'distillers'",
        ),
        ("datasets: [imdb-movies\nteacher: {model: dcnn}\n", "grid.yaml:2: YAML syntax error"),
        ("- just\n- a list\n", "grid.yaml:1: a grid is a mapping of keys"),
        ("", "grid.yaml:1: the grid file is empty"),
    ],
)
def test_bad_grid_is_one_line_exit_2_nothing_written(
    write_grid, tmp_path, monkeypatch, capsys, text, expected
):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(text=text)
    assert run("run", "--grid", str(grid)) == 2
    line = one_error_line(capsys)
    assert expected in line, line
    assert not (tmp_path / "runs").exists()


def test_missing_grid_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run("run", "--grid", "nope.yaml") == 2
    assert "nope.yaml: grid file not found" in one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_bad_flags_are_one_line_exit_2(write_grid, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid()
    assert run("run", "--grid", str(grid), "-j", "0") == 2
    assert "need at least 1 worker" in one_error_line(capsys)
    assert run("run", "--grid", str(grid), "--device", "tpu") == 2
    assert "expected cpu, cuda or auto" in one_error_line(capsys)
    if not torch.cuda.is_available():
        assert run("run", "--grid", str(grid), "--device", "cuda") == 2
        assert "CUDA is not available" in one_error_line(capsys)
    assert run("run") == 2
    assert "--grid" in one_error_line(capsys)
    assert run("list", "--results", "missing.db") == 2
    assert "missing.db: results database not found" in one_error_line(capsys)
    Path("junk.db").write_text("not sqlite at all" * 100)
    assert run("leaderboard", "--results", "junk.db", "--out", "lb") == 2
    assert "junk.db: not a harness results database" in one_error_line(capsys)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lb").exists()


@pytest.mark.slow
def test_parallel_workers_and_leaderboard_command(write_grid, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(distillers="[none, kd]", seeds="[0, 1]")
    assert run("run", "--grid", str(grid), "-j", "2", "--out", "par") == 0
    assert "4 ok, 0 failed" in capsys.readouterr().out
    db = sqlite3.connect(tmp_path / "par/results.db")
    assert db.execute("select count(*) from cells where status='ok'").fetchone()[0] == 4
    # teachers were trained once per seed even with two workers asking at once
    assert db.execute("select count(*) from teachers").fetchone()[0] == 2
    assert run("leaderboard", "--results", "par/results.db", "--out", "lb") == 0
    assert (tmp_path / "lb/imdb-movies_features=numerical__rating.md").exists()
    assert (tmp_path / "lb/README.md").read_text().startswith("# Leaderboards")


class Interrupting(Distiller):
    name = "ctrl-c"
    description = "test: the user presses Ctrl-C during this cell"
    tasks = frozenset({"rating"})

    def loss(self, step):
        raise KeyboardInterrupt


class InterruptPlugin:
    @hookimpl
    def harness_register_distillers(self, register):
        register(Interrupting)


@pytest.mark.slow
def test_interrupt_keeps_finished_cells_and_exits_130(write_grid, tmp_path, monkeypatch, capsys, register):
    register(InterruptPlugin(), "interrupt")
    monkeypatch.chdir(tmp_path)
    grid = write_grid(distillers="[none, ctrl-c]")
    assert run("run", "--grid", str(grid)) == 130
    captured = capsys.readouterr()
    assert "interrupted: finished cells are stored" in captured.err
    db = sqlite3.connect(tmp_path / "runs/tiny/results.db")
    assert db.execute("select distiller, status from cells").fetchall() == [("none", "ok")]
    assert (tmp_path / "runs/tiny/leaderboards/README.md").exists()


def test_outcomes_survive_an_interrupt_and_the_resumed_board_reproduces_their_p_values(
    write_grid, tmp_path, monkeypatch, capsys, register
):
    from harness import stats as sig
    from harness.store import Store

    register(InterruptPlugin(), "interrupt")
    monkeypatch.chdir(tmp_path)
    assert run("run", "--grid", str(write_grid(distillers="[none, ctrl-c]", seeds="[0, 1]"))) == 130
    db = tmp_path / "runs/tiny/results.db"
    before = sqlite3.connect(db).execute("select key, data from outcomes where kind = 'cell'").fetchall()
    assert len(before) == 2  # the plain students (both seeds run first), stored before the interrupt
    capsys.readouterr()
    assert run("run", "--grid", str(write_grid(distillers="[none, kd]", seeds="[0, 1]"))) == 0
    assert "2 to run; 2 already finished" in capsys.readouterr().out
    conn = sqlite3.connect(db)
    assert set(before) <= set(conn.execute("select key, data from outcomes where kind = 'cell'").fetchall())
    store = Store.open_existing(db)
    records, teachers = store.records(status="ok"), store.teachers()
    assert len(records) == 4 and len(teachers) == 2
    for r in [*records, *teachers]:
        errors = r["outcomes"]["test"]["abs_err"]
        assert len(errors) == 494 and float(errors.mean()) == pytest.approx(
            r["metrics"]["test"]["mae"], rel=1e-5
        )
    by = {(r["distiller"], r["seed"]): r["outcomes"]["test"]["abs_err"] for r in records}
    kd = {s: by[("kd", s)] for s in (0, 1)}
    plain = {s: by[("none", s)] for s in (0, 1)}
    t_out = {t["seed"]: t["outcomes"]["test"]["abs_err"] for t in teachers}
    comps = [sig.compare(kd, plain, "wilcoxon"), sig.compare(t_out, plain, "wilcoxon")]
    adjusted = sig.holm([c.p for c in comps])
    md = (tmp_path / "runs/tiny/leaderboards/imdb-movies_features=numerical__rating.md").read_text()
    rows = {
        cells[0]: cells
        for line in md.split("## Every column")[1].splitlines()  # (the whole table, every column)
        if line.startswith("| ")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    kd_row = next(v for k, v in rows.items() if k.startswith("KD"))
    t_row = next(v for k, v in rows.items() if k.startswith("Teacher"))
    for row, c, p in ((kd_row, comps[0], adjusted[0]), (t_row, comps[1], adjusted[1])):
        assert row[5].endswith(f"{c.delta:+.3g} [{c.ci[0]:+.3g}, {c.ci[1]:+.3g}]")
        assert row[6] == f"{p:.2g}"
        assert row[8] == f"{c.wins}/{c.ties}/{c.losses}"
    assert "Teacher check" in "\n".join(md.splitlines()[:4])


@pytest.mark.slow
def test_interrupt_in_a_worker_cancels_the_pending_cells(write_grid, tmp_path, capsys):
    # the plugin must reach the spawned workers: install it as a dist-info on sys.path
    site = tmp_path / "site"
    (site / "harness_ctrlc").mkdir(parents=True)
    (site / "harness_ctrlc" / "__init__.py").write_text(
        "from harness import hookimpl\n"
        "from harness.api import Distiller\n\n"
        "class CtrlC(Distiller):\n"
        "    name = 'ctrl-c'\n"
        "    tasks = frozenset({'rating'})\n\n"
        "    def loss(self, step):\n"
        "        raise KeyboardInterrupt\n\n"
        "@hookimpl\n"
        "def harness_register_distillers(register):\n"
        "    register(CtrlC)\n"
    )
    info = site / "harness_ctrlc-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-ctrlc\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness]\nctrlc = harness_ctrlc\n")
    grid = write_grid(distillers="[ctrl-c, none]", seeds="[0, 1, 2, 3, 4, 5]")
    env = dict(os.environ, PYTHONPATH=str(site))
    res = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--grid", str(grid), "-j", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 130, res.stdout + res.stderr
    assert "interrupted" in res.stderr
    db = sqlite3.connect(tmp_path / "runs/tiny/results.db")
    stored = db.execute("select count(*) from cells").fetchone()[0]
    assert stored < 12  # the cells not yet started were cancelled, not run
