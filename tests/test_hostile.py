"""Bad input as a hostile or careless user gives it: grid files, flags, stores and
datasets. Each must be refused with exit 2, one line on stderr naming the place, and
nothing written under --out. Also: a crash is exit 70 with one line, never 1."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import EXIT_CRASH, main

BASE = """\
name: tiny
datasets: [imdb-movies]
teacher: {model: dcnn, channels: [4, 8], hidden: 8}
student: {model: dcnn, channels: [2, 4], hidden: 4}
distillers: [none, kd]
seeds: [0]
budget:
  epochs: 1
  batch_size: 256
train:
  lr: 0.001
energy: {inference_min_seconds: 0.0}
"""


def base(**lines: str) -> str:
    """BASE with line N (given as _N=...) replaced."""
    out = BASE.splitlines()
    for k, v in lines.items():
        out[int(k[1:]) - 1] = v
    return "\n".join(out) + "\n"


def bomb(levels: int = 9, width: int = 10) -> str:
    """Nested aliases ("billion laughs"): width**levels nodes once expanded."""
    rows = ["a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    for i in range(1, levels):
        rows.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(rows) + f"\ndatasets: *a{levels - 1}\n"


# (id, grid text or bytes, the start of the message after "harness: error: grid.yaml")
GRIDS = [
    ("alias-bomb", bomb(), ":5: this value expands (through YAML aliases) to more than 100,000 nodes"),
    ("deep-list", "datasets: " + "[" * 3000 + "]" * 3000 + "\n", ":1: nested more than 40 levels"),
    ("deep-map", "".join("  " * i + f"k{i}:\n" for i in range(60)), ":40: nested more than 40 levels"),
    ("latin-1", "name: caf\xe9\n".encode("latin-1"), ":1: not UTF-8 text (byte 0xe9"),
    ("binary", b"\x7fELF\x02\x01\x01\x00\x00\x00", ":1: a NUL byte: this is a binary file"),
    ("too-large", "# " + "x" * 1_000_001 + "\n", ": larger than 1,000,000 bytes"),
    ("python-tag", "name: !!python/object/apply:os.system [echo hi]\n", ":1: YAML syntax error"),
    ("undefined-alias", "datasets: *nowhere\n", ":1: YAML syntax error: found undefined alias"),
    ("tab-indent", "budget:\n\tepochs: 1\n", ":2: YAML syntax error"),
    (
        "dup-top-key",
        BASE + "distillers: [kd]\n",
        ":13: distillers: duplicate key 'distillers' (first at line 5)",
    ),
    ("dup-nested-key", base(_9="  epochs: 3"), ":9: budget.epochs: duplicate key 'epochs' (first at line 8)"),
    ("epochs-0", base(_8="  epochs: 0"), ":8: budget.epochs: 0 is not allowed; expected an int >= 1"),
    ("epochs-neg", base(_8="  epochs: -1"), ":8: budget.epochs: -1 is not allowed"),
    ("epochs-float", base(_8="  epochs: 1.5"), ":8: budget.epochs: expected int"),
    ("teacher-epochs-0", base(_8="  teacher_epochs: 0"), ":8: budget.teacher_epochs: 0 is not allowed"),
    ("batch-0", base(_9="  batch_size: 0"), ":9: budget.batch_size: 0 is not allowed; expected an int >= 1"),
    ("eval-batch-neg", base(_9="  eval_batch_size: -5"), ":9: budget.eval_batch_size: -5 is not allowed"),
    ("lr-neg", base(_11="  lr: -0.1"), ":11: train.lr: -0.1 is not allowed; expected a number > 0"),
    ("lr-0", base(_11="  lr: 0"), ":11: train.lr: 0.0 is not allowed"),
    ("lr-nan", base(_11="  lr: .nan"), ":11: train.lr: expected a finite number"),
    ("lr-inf", base(_11="  lr: .inf"), ":11: train.lr: expected a finite number"),
    ("lr-text", base(_11="  lr: fast"), ":11: train.lr: expected float/int, got str"),
    ("momentum-1.5", base(_11="  momentum: 1.5"), ":11: train.momentum: 1.5 is not allowed"),
    ("weight-decay-neg", base(_11="  weight_decay: -1"), ":11: train.weight_decay: -1.0 is not allowed"),
    ("milestones-neg", base(_11="  milestones: [-1]"), ":11: train.milestones: [-1] is not allowed"),
    ("gamma-0", base(_11="  gamma: 0"), ":11: train.gamma: 0.0 is not allowed"),
    ("grad-clip-0", base(_11="  grad_clip: 0"), ":11: train.grad_clip: 0.0 is not allowed"),
    (
        "infer-seconds-neg",
        base(_12="energy: {inference_min_seconds: -1}"),
        ":12: energy.inference_min_seconds",
    ),
    ("watts-0", base(_12="energy: {cpu_watts_per_core: 0}"), ":12: energy.cpu_watts_per_core: 0.0 is not"),
    ("student-empty", base(_4="student: []"), ":4: student: an empty list; give at least one student"),
    ("teacher-empty", base(_3="teacher: []"), ":3: teacher: an empty list; give at least one teacher"),
    ("distillers-empty", base(_5="distillers: []"), ":5: distillers: expected a non-empty list"),
    ("datasets-empty", base(_2="datasets: []"), ":2: datasets: expected a non-empty list"),
    ("seeds-empty", base(_6="seeds: []"), ":6: seeds: expected a non-empty list"),
    ("seeds-0", base(_6="seeds: 0"), ":6: seeds: the number of seeds must be 1 to 100,000"),
    ("seeds-huge", base(_6="seeds: 10000000000"), ":6: seeds: the number of seeds must be 1 to 100,000"),
    ("seeds-bool", base(_6="seeds: [0, true]"), ":6: seeds[1]: expected an int seed"),
    ("sweep-empty", base(_4="student: {model: dcnn, hidden: []}"), ":4: student: hidden: an empty list"),
    ("cells-too-many", base(_6="seeds: 60000"), ":1: the grid expands to 120,000 cells, more than 100,000"),
    ("name-dotdot", base(_1="name: '..'"), ":1: name: '..' cannot name the output folder"),
    ("name-dot", base(_1="name: '.'"), ":1: name: '.' cannot name the output folder"),
    ("name-path", base(_1="name: ../elsewhere"), ":1: name: '../elsewhere' cannot name the output folder"),
    ("name-slash", base(_1="name: a/b"), ":1: name: 'a/b' cannot name the output folder"),
    ("name-empty", base(_1="name: ''"), ":1: name: '' cannot name the output folder"),
    ("name-number", base(_1="name: 5"), ":1: name: 5 cannot name the output folder"),
    ("unknown-budget-key", base(_9="  batchsize: 8"), ":9: budget.batchsize: unknown key 'batchsize'"),
    ("a-list", "- just\n- a list\n", ":1: a grid is a mapping of keys"),
    ("empty", "", ":1: the grid file is empty"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("harness: error: "), err
    return err[0]


@pytest.mark.parametrize(("text", "expected"), [g[1:] for g in GRIDS], ids=[g[0] for g in GRIDS])
@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
def test_bad_grid_file(tmp_path, monkeypatch, capsys, text, expected, dry):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = _snapshot(tmp_path)
    t0 = time.perf_counter()
    code = main(["run", "--grid", str(grid), "--out", "out", *(["--dry-run"] if dry else [])])
    # a bound against a hang (the campaign's grid never returned), not a speed target:
    # each takes well under a second alone, but several seconds on a loaded 2-core machine
    assert time.perf_counter() - t0 < 30
    assert code == 2
    line = one_line(capsys)
    assert line.startswith(f"harness: error: {grid}{expected}"), line
    assert "Traceback" not in line
    assert (
        _snapshot(tmp_path) == before and not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
    )


def test_the_base_grid_is_valid(tmp_path, monkeypatch, capsys):
    """(so that each case above fails for its own line, not for the base)"""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text(BASE)
    assert main(["run", "--grid", "grid.yaml", "--out", "out", "--dry-run"]) == 0
    assert "2 cells: 2 to run" in capsys.readouterr().out


def test_the_alias_bomb_is_refused_fast_and_small(tmp_path):
    """Must show: a grid of aliases that would expand past 10**6 nodes exits 2 within
    5 s under --dry-run, peak memory under 500 MB (a fresh process: nothing cached)."""
    (tmp_path / "bomb.yaml").write_text(bomb(levels=9, width=10))  # 10**9 nodes expanded
    # The child's own peak: VmHWM of its process image, written when it exits.
    # (ru_maxrss, of RUSAGE_CHILDREN or wait4, keeps the peak of the image before exec:
    # with (v)fork that is this test process's own, ~500 MB late in a full run.)
    peak_file = tmp_path.parent / "bomb.peak"
    child = (
        "import atexit, pathlib, runpy, sys\n"
        "out = pathlib.Path(sys.argv.pop(1))\n"
        "hwm = lambda: next(x for x in open('/proc/self/status') if x.startswith('VmHWM')).split()[1]\n"
        "atexit.register(lambda: out.write_text(hwm()))\n"
        "runpy.run_module('harness', run_name='__main__', alter_sys=True)\n"
    )
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", child, str(peak_file), "run", "--grid", "bomb.yaml", "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.perf_counter() - t0
    peak_mb = int(peak_file.read_text()) / 1024  # (kB)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "harness: error: bomb.yaml:5: this value expands (through YAML aliases) to more than 100,000 "
        "nodes; write it out or use fewer aliases"
    ]
    assert seconds < 5 and peak_mb < 500, (seconds, peak_mb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml"]


def test_aliases_within_bounds_still_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = BASE.replace(
        "budget:\n  epochs: 1\n  batch_size: 256\n", "budget: &b {epochs: 1, batch_size: 256}\n"
    )
    text += "overrides: {kd: {budget: *b}}\n"
    (tmp_path / "grid.yaml").write_text(text)
    assert main(["run", "--grid", "grid.yaml", "--dry-run"]) == 0


# ----- flags and folders


def test_bad_flags_and_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text(BASE)
    (tmp_path / "afile").write_text("x")
    cases = [
        (["-j", "0"], "-j 0: need at least 1 worker"),
        (["-j", "-3"], "-j -3: need at least 1 worker"),
        (["--device", "tpu"], "--device 'tpu': expected cpu, cuda or auto"),
        (["--out", "afile"], "--out afile: exists and is not a folder"),
        (
            ["--out", "afile/sub/deeper"],
            f"--out afile/sub/deeper: {tmp_path / 'afile'} is a file, not a folder",
        ),
        (["--section", "gpu"], "grid.yaml:1: no section 'gpu' in this grid (sections: none)"),
        (["--frobnicate"], "harness: unrecognized arguments: --frobnicate"),
        (["-j", "two"], "harness run: argument -j/--jobs: invalid int value: 'two'"),
    ]
    before = _snapshot(tmp_path)
    for extra, expected in cases:
        assert main(["run", "--grid", "grid.yaml", *extra]) == 2, extra
        line = one_line(capsys)
        assert line == f"harness: error: {expected}" or line.startswith(f"harness: error: {expected}"), line
    assert main(["list"]) == 2
    assert "give --results DB or --grid FILE" in one_line(capsys)
    assert main(["list", "--results", "afile/x.db"]) == 2
    assert "afile/x.db: results database not found" in one_line(capsys)
    assert _snapshot(tmp_path) == before and not (tmp_path / "runs").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_without_permission(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text(BASE)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["run", "--grid", "grid.yaml", "--out", "locked/out"]) == 2
    assert f"no permission to write in {locked}" in one_line(capsys)


# ----- stores


def _foreign(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE photos (id INTEGER, name TEXT)")
    db.execute("INSERT INTO photos VALUES (1, 'cat')")
    db.commit()
    db.close()
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


STORES = [
    ("foreign-sqlite", _foreign, "not a harness results database (no harness tables in it)"),
    ("empty-file", lambda p: _bytes(p, b""), "an empty file, not a harness results database"),
    ("text-file", lambda p: _bytes(p, b"id,status\n1,ok\n" * 300), "not a harness results database"),
    ("truncated-sqlite", lambda p: _bytes(p, b"SQLite format 3\x00" + b"\x00" * 50), "database"),
]


@pytest.mark.parametrize(("make", "expected"), [s[1:] for s in STORES], ids=[s[0] for s in STORES])
@pytest.mark.parametrize("command", ["list", "leaderboard"])
def test_read_commands_refuse_and_never_change_a_foreign_file(
    tmp_path, monkeypatch, capsys, make, expected, command
):
    monkeypatch.chdir(tmp_path)
    db = make(tmp_path / "x.db")
    before = _snapshot(tmp_path)
    argv = (
        ["list", "--results", "x.db"]
        if command == "list"
        else ["leaderboard", "--results", "x.db", "--out", "lb"]
    )
    assert main(argv) == 2
    line = one_line(capsys)
    assert line.startswith("harness: error: x.db: ") and expected in line, line
    assert _snapshot(tmp_path) == before  # byte-identical, no journal left, no lb/
    assert db.exists()


def test_run_refuses_a_foreign_results_db_in_its_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text(BASE)
    (tmp_path / "out").mkdir()
    _foreign(tmp_path / "out" / "results.db")
    before = _snapshot(tmp_path)
    assert main(["run", "--grid", "grid.yaml", "--out", "out"]) == 2
    assert "out/results.db: not a harness results database" in one_line(capsys)
    assert _snapshot(tmp_path) == before


def test_an_empty_harness_store_says_no_results(tmp_path, monkeypatch, capsys):
    from harness.store import Store

    monkeypatch.chdir(tmp_path)
    Store(tmp_path / "r.db").close()
    before = _snapshot(tmp_path)
    assert main(["list", "--results", "r.db"]) == 0
    assert capsys.readouterr().out.strip() == "no results in r.db"
    assert main(["leaderboard", "--results", "r.db", "--out", "lb"]) == 0
    assert "no results in r.db: nothing written" in capsys.readouterr().out
    assert _snapshot(tmp_path) == before


# ----- datasets: the atomic loader says what to fix


INTER = [
    ("empty", "", ":1: empty; expected a header"),
    (
        "no-item-column",
        "user_id:token\tmovie:token\n1\t2\n",
        ":1: no item_id column (header: user_id, movie)",
    ),
    ("untyped-header", "user_id\titem_id\n1\t2\n", ":1: header field without :TYPE"),
    (
        "row-cut-short",
        "user_id:token\titem_id:token\trating:float\n1\t2\t3\n4\t5",
        ":3: 2 field(s), the header has 3",
    ),
    ("spaces-not-tabs", "user_id:token\titem_id:token\n1 2\n", ":2: 1 field(s), the header has 2"),
    (
        "rating-not-number",
        "user_id:token\titem_id:token\trating:float\n1\t2\tfive\n",
        ":2: rating: 'five' is not",
    ),
    ("header-only", "user_id:token\titem_id:token\n", ": a header but no interactions"),
    ("latin-1", b"user_id:token\titem_id:token\n\xe9\t1\n", ": not UTF-8 text"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in INTER], ids=[c[0] for c in INTER])
def test_atomic_inter_file_errors_name_file_line_and_column(tmp_path, text, expected):
    from harness.errors import UsageError
    from harness_recsys.data import check_inter_file

    f = tmp_path / "mine" / "mine.inter"
    f.parent.mkdir()
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UsageError) as e:
        check_inter_file(f)
    assert str(e.value).startswith(f"{f}{expected}"), str(e.value)
    assert "\n" not in str(e.value)


def test_skipped_cells_say_why_on_the_console(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = BASE.replace(
        "datasets: [imdb-movies]",
        "datasets: [imdb-movies, {name: recbole-atomic, path: nowhere, task: rating}]",
    ).replace("[none, kd]", "[none]")
    (tmp_path / "grid.yaml").write_text(text)
    assert main(["run", "--grid", "grid.yaml", "--out", "out"]) == 0
    out = capsys.readouterr().out
    assert "  skipped 1 cell: nowhere/nowhere.inter does not exist" in out, out


# ----- crashes are not partial successes


def test_a_crash_is_one_line_and_exit_70_with_the_traceback_in_a_log(tmp_path, monkeypatch, capsys):
    import harness.grid

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    (tmp_path / "grid.yaml").write_text(BASE)

    def broken(*_a, **_k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(harness.grid, "load_grid", broken)
    assert main(["run", "--grid", "grid.yaml"]) == EXIT_CRASH != 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: crashed (ZeroDivisionError: a bug); traceback in ")
    log = Path(err[0].split("traceback in ")[1].split(";")[0])
    assert log.parent == tmp_path and "Traceback (most recent call last)" in log.read_text()
    assert main(["--debug", "run", "--grid", "grid.yaml"]) == EXIT_CRASH
    assert "Traceback (most recent call last)" in capsys.readouterr().err
