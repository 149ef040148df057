"""`harness run --scheduler`: a grid on a Dask cluster of two worker processes gives the
stored metrics of `-j 1`, trains each teacher once, survives a worker killed mid-cell,
and a killed client's rerun completes the grid."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.store import Store
from tests.test_executor import GRID as SLOW_GRID
from tests.test_executor import _site

distributed = pytest.importorskip("distributed")

TINY = """\
name: tiny
datasets: [imdb-movies]
teacher: {model: dcnn, channels: [4, 8], hidden: 8}
student: {model: dcnn, channels: [2, 4], hidden: 4}
distillers: %s
seeds: %s
budget: {epochs: 2, teacher_epochs: 2, batch_size: 256}
energy: {inference_min_seconds: 0.0}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two worker processes of one thread; they (and the clients started here) load the
    test's `slow` distiller plugin, which sleeps 0.2 s per step."""
    site = _site(tmp_path_factory.mktemp("scaleout"))
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "HARNESS_TEST_SLEEP")}
    os.environ["PYTHONPATH"] = str(site)
    os.environ["HARNESS_TEST_SLEEP"] = "0.2"
    sys.path.append(str(site))  # (spawned workers take this process's sys.path, not PYTHONPATH)
    from harness.scaleout import local_cluster

    c = local_cluster(2)
    client = distributed.Client(c)
    try:
        yield c, client, site
    finally:
        client.close()
        c.close()
        sys.path.remove(str(site))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _records(db: Path) -> dict[str, dict]:
    store = Store.open_existing(db)
    try:
        return {r["id"]: r for r in store.records()}
    finally:
        store.close()


def _client(tmp_path: Path, address: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "--grid", "grid.yaml", "--out", "out", "--no-progress"]
        + ["--scheduler", address, *extra],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _progress(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("[")]


def _ready(client, n: int = 2) -> None:
    client.wait_for_workers(n, timeout=60)


def test_same_metrics_as_one_job_and_the_workers_are_named(cluster, tmp_path, monkeypatch, capsys):
    c, client, _ = cluster
    _ready(client)
    monkeypatch.chdir(tmp_path)
    Path("grid.yaml").write_text(TINY % ("[none, kd]", "[0, 1]"))
    # Dask's worker processes run torch on one thread (OMP_NUM_THREADS=1); the same here,
    # since another thread count sums floats in another order (metrics differ at ~1e-5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", "--grid", "grid.yaml", "--out", "one", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert main(["run", "--grid", "grid.yaml", "--out", "dask", "--scheduler", c.scheduler_address]) == 0
    out = capsys.readouterr().out
    assert f"dask scheduler {c.scheduler_address}: 2 workers" in out
    one, dask = _records(Path("one/results.db")), _records(Path("dask/results.db"))
    assert sorted(one) == sorted(dask) and len(one) == 4
    for cid, rec in one.items():
        assert dask[cid]["status"] == rec["status"] == "ok"
        assert dask[cid]["metrics"] == rec["metrics"], cid
        assert dask[cid]["size"]["params"] == rec["size"]["params"]
    workers = {r["worker"] for r in dask.values()}
    pids = set(client.run(os.getpid).values())
    assert {int(w.rsplit(":", 1)[1]) for w in workers} <= pids  # run by the workers, not here
    assert main(["list", "--results", "dask/results.db"]) == 0
    listed = capsys.readouterr().out
    assert "worker" in listed.splitlines()[0] and next(iter(workers)) in listed
    # a second run runs nothing
    assert main(["run", "--grid", "grid.yaml", "--out", "dask", "--scheduler", c.scheduler_address]) == 0
    assert "0 to run; 4 already finished" in capsys.readouterr().out


def test_a_teacher_is_trained_once_for_two_cells_on_two_workers(cluster, tmp_path, monkeypatch, capsys):
    c, client, _ = cluster
    _ready(client)
    monkeypatch.chdir(tmp_path)
    Path("grid.yaml").write_text(TINY % ("[kd, sad]", "[0]"))
    assert main(["run", "--grid", "grid.yaml", "--out", "out", "--scheduler", c.scheduler_address]) == 0
    recs = list(_records(Path("out/results.db")).values())
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)
    runs = [r["teacher_run"] for r in recs]
    assert len({t["key"] for t in runs}) == 1
    # the teacher task trained it (it names its worker); both cells loaded the cache
    trained = [t for t in runs if not t["cached"]]
    assert len(trained) == 1 and "worker" in trained[0], runs
    assert len(list(Path("out/teachers").glob("*.pt"))) == 1
    store = Store.open_existing(Path("out/results.db"))
    (teacher,) = store.teachers()
    store.close()
    assert teacher["cached"] is False and teacher["worker"] == trained[0]["worker"]
    assert len({r["worker"] for r in recs}) == 2, [r["worker"] for r in recs]


def _busy_worker(client, deadline: float) -> str | None:
    """The address of a worker now running a cell."""
    while time.time() < deadline:
        for addr, keys in client.processing().items():
            if any(str(k).startswith("cell-") for k in keys):
                return addr
        time.sleep(0.1)
    return None


def test_a_worker_killed_mid_cell_and_every_cell_is_stored_once(cluster, tmp_path):
    c, client, _ = cluster
    _ready(client)
    (tmp_path / "grid.yaml").write_text(SLOW_GRID % "[0, 1, 2, 3]")
    proc = _client(tmp_path, c.scheduler_address)
    victim = _busy_worker(client, time.time() + 90)
    assert victim is not None, proc.communicate()
    time.sleep(0.5)  # (into the cell's training)
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out + err
    lines = _progress(out)
    assert len(lines) == 4 and all(" ok " in line for line in lines), out
    db = sqlite3.connect(tmp_path / "out/results.db")
    assert db.execute("select count(*) from cells where status = 'ok'").fetchone()[0] == 4
    assert db.execute("select count(*) from claims").fetchone()[0] == 0
    workers = [json.loads(r[0])["worker"] for r in db.execute("select record from cells")]
    assert f"{os.uname().nodename}:{pid}" not in workers  # (its cell was rerun elsewhere)


def test_the_client_killed_and_rerun_completes_the_rest(cluster, tmp_path):
    c, client, _ = cluster
    _ready(client)
    (tmp_path / "grid.yaml").write_text(SLOW_GRID % "[0, 1, 2, 3, 4, 5]")
    proc = _client(tmp_path, c.scheduler_address)
    db_path = tmp_path / "out/results.db"
    deadline = time.time() + 120
    stored = 0
    while stored < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db_path.exists():
            with sqlite3.connect(db_path) as db:
                try:
                    stored = db.execute("select count(*) from cells").fetchone()[0]
                except sqlite3.OperationalError:
                    stored = 0
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = _client(tmp_path, c.scheduler_address)
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, out + err
    db = sqlite3.connect(db_path)
    assert db.execute("select count(*) from cells where status = 'ok'").fetchone()[0] == 6
    assert db.execute("select count(*) from claims").fetchone()[0] == 0
    ran = len(_progress(out))
    assert 1 <= ran <= 5 and f"{6 - ran} already finished" in out, out


class _FakeFuture:
    def __init__(self, fn, args):
        self.fn, self.args, self.status = fn, args, "pending"

    def done(self):
        return self.status == "finished"

    def result(self):
        return self.fn(*self.args)

    def release(self):
        pass


class _FakeClient:
    """Records what is submitted, in order, with its Dask options; runs nothing."""

    def __init__(self):
        self.submitted: list[tuple[str, dict]] = []

    def submit(self, fn, *args, **kw):
        self.submitted.append((fn.__name__, kw))
        return _FakeFuture(fn, args)

    def nthreads(self):
        return {"w1": 1, "w2": 1}


def test_cuda_cells_and_teachers_ask_for_a_gpu_and_cells_wait_for_their_teacher(tmp_path):
    from harness.grid import load_grid
    from harness.plugins import get_registry
    from harness.runner import RunOptions
    from harness.scaleout import TEACHER_PRIORITY, _Run

    (tmp_path / "grid.yaml").write_text(TINY % ("[none, kd]", "[0, 1]"))
    grid = load_grid(tmp_path / "grid.yaml", get_registry())
    client = _FakeClient()
    run = _Run(client, grid.runnable, grid.name, RunOptions(device="cuda"), None, None, None)
    # two teachers (one per seed) first, at a higher priority, each asking for a GPU
    assert [name for name, _ in client.submitted] == ["_teacher_task", "_teacher_task"]
    assert all(
        kw["priority"] == TEACHER_PRIORITY and kw["resources"] == {"GPU": 1} for _, kw in client.submitted
    )
    run.fill()  # only the cells without a teacher (distiller none) can go yet
    cells = [kw for name, kw in client.submitted if name == "_cell_task"]
    assert len(cells) == 2 and all(kw["resources"] == {"GPU": 1} for kw in cells)
    assert all(cell.config["distiller"]["name"] == "none" for _i, cell in run.running.values())
    assert {key for _i, _c, key in run.pending} == set(run.teachers)
    assert "_cell_task" not in [n for n, _ in client.submitted[:2]]


def test_cpu_cells_ask_for_no_resource(tmp_path):
    from harness.grid import load_grid
    from harness.plugins import get_registry
    from harness.runner import RunOptions
    from harness.scaleout import _Run

    (tmp_path / "grid.yaml").write_text(TINY % ("[none]", "[0]"))
    grid = load_grid(tmp_path / "grid.yaml", get_registry())
    client = _FakeClient()
    run = _Run(client, grid.runnable, grid.name, RunOptions(device="cpu"), None, None, None)
    run.fill()
    assert [(n, kw["resources"]) for n, kw in client.submitted] == [("_cell_task", None)]


def test_a_bad_scheduler_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("grid.yaml").write_text(TINY % ("[none]", "[0]"))
    assert main(["run", "--grid", "grid.yaml", "--out", "out", "--scheduler", "missing.json"]) == 2
    assert main(["run", "--grid", "grid.yaml", "--out", "out", "--scheduler", "s.json", "-j", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "harness: error: --scheduler missing.json: scheduler file not found",
        "harness: error: -j with --scheduler: the cluster's workers set how many cells run at once",
    ]
    assert not Path("out").exists()
