"""Worker processes and concurrent runs: workers die with their parent (kill -9 of a
`-j 2` run leaves none behind), and two runs on one --out run each cell once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

GRID = """\
name: slow
datasets: [imdb-movies]
teacher: {model: dcnn, channels: [4, 8], hidden: 8}
student: {model: dcnn, channels: [2, 4], hidden: 4}
distillers: [slow]
seeds: %s
budget: {epochs: 1, batch_size: 256}
energy: {inference_min_seconds: 0.0}
"""

SLOW = """
import os, time
from harness import hookimpl
from harness.api import Distiller

class Slow(Distiller):
    name = "slow"
    description = "test: the student's own loss, HARNESS_TEST_SLEEP seconds per step"
    tasks = frozenset({"rating"})

    def loss(self, step):
        time.sleep(float(os.environ.get("HARNESS_TEST_SLEEP", "0.2")))
        return step.task_loss

@hookimpl
def harness_register_distillers(register):
    register(Slow)
"""


def _site(tmp_path: Path) -> Path:
    """A plugin the spawned workers load too: installed as a dist-info on PYTHONPATH."""
    site = tmp_path / "site"
    (site / "harness_slow").mkdir(parents=True, exist_ok=True)
    (site / "harness_slow" / "__init__.py").write_text(SLOW)
    info = site / "harness_slow-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-slow\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness]\nslow = harness_slow\n")
    return site


def _start(tmp_path: Path, *extra: str, sleep: str = "0.2") -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(_site(tmp_path)), HARNESS_TEST_SLEEP=sleep)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "run",
            "--grid",
            "grid.yaml",
            "--out",
            "out",
            "--no-progress",
            *extra,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _workers(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [
        k
        for k in kids
        if "multiprocessing" in " ".join(k.cmdline()) and "spawn_main" in " ".join(k.cmdline())
    ]


def _computing(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_kill_9_of_the_parent_leaves_no_worker_and_the_rerun_takes_over(tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID % "[0, 1, 2, 3]")
    proc = _start(tmp_path, "-j", "2")
    deadline = time.time() + 120
    while len(_workers(proc.pid)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    workers = _workers(proc.pid)
    assert len(workers) >= 2, proc.communicate()
    everything = psutil.Process(proc.pid).children(recursive=True)
    time.sleep(3)  # the workers are training now
    assert all(w.is_running() for w in workers)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _gone, alive = psutil.wait_procs(everything, timeout=5)
    # (a dead child nobody has reaped yet, e.g. under a container's PID 1, is a zombie)
    assert [p.pid for p in alive if _computing(p)] == []
    # the killed run's claims are its dead pid's: the next run takes them over
    rerun = _start(tmp_path, "-j", "2", sleep="0")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out + err
    db = sqlite3.connect(tmp_path / "out/results.db")
    assert db.execute("select count(*) from cells where status = 'ok'").fetchone()[0] == 4
    assert db.execute("select count(*) from claims").fetchone()[0] == 0


@pytest.mark.slow
def test_two_runs_on_one_out_run_each_cell_once(tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID % "[0, 1, 2, 3, 4, 5]")
    runs = [_start(tmp_path, sleep="0.2") for _ in range(2)]
    outs = [r.communicate(timeout=600) for r in runs]
    for r, (out, err) in zip(runs, outs, strict=True):
        assert r.returncode == 0, out + err
    ran = [sum(1 for line in out.splitlines() if line.startswith("[") and " ok " in line) for out, _ in outs]
    assert sum(ran) == 6, outs  # each cell once between the two runs
    assert all(n >= 1 for n in ran), outs  # and both did some of the work
    db = sqlite3.connect(tmp_path / "out/results.db")
    assert db.execute("select count(*) from cells where status = 'ok'").fetchone()[0] == 6
