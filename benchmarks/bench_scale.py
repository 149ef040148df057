"""Local processes against Dask: the wall time of a small grid (the quick grid, trimmed)
with 1 and 2 workers, run by `-j N`'s executor (in-process for 1, a ProcessPoolExecutor
for 2) and by `--scheduler`'s (a LocalCluster of N one-thread worker processes); and
the scheduling overhead per cell (a no-op task's round trip) of each.

    python benchmarks/bench_scale.py [--features numerical] [--seeds 2] [--noop 200]

Torch threads per worker are the same in both (cores // workers), as `-j N` sets them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import yaml

from _common import emit, hardware
from harness.executor import execute
from harness.grid import load_grid
from harness.plugins import get_registry
from harness.runner import RunOptions
from harness.scaleout import execute_on, local_cluster

ROOT = Path(__file__).resolve().parent.parent


def trimmed_quick(features: str, seeds: int, folder: Path) -> Path:
    doc = yaml.safe_load((ROOT / "grids/quick.yaml").read_text())
    doc["datasets"] = [{"name": "imdb-movies", "features": features}]
    doc["seeds"] = list(range(seeds))
    path = folder / "quick-trimmed.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_local(cells, grid: str, out: Path, workers: int) -> float:
    opts = RunOptions(device="cpu", teacher_dir=str(out / "teachers"))
    records: list[dict] = []
    t0 = time.perf_counter()
    execute(cells, grid, opts, workers, lambda r, _i: records.append(r))
    wall = time.perf_counter() - t0
    assert len(records) == len(cells) and all(r["status"] == "ok" for r in records), records
    return wall


def run_dask(cells, grid: str, out: Path, workers: int) -> tuple[float, float]:
    """(wall time with the cluster's start, the start alone)."""
    from distributed import Client

    opts = RunOptions(device="cpu", teacher_dir=str(out / "teachers"))
    records: list[dict] = []
    t0 = time.perf_counter()
    with local_cluster(workers) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        started = time.perf_counter() - t0
        threads = max(1, (os.cpu_count() or 1) // workers)
        execute_on(client, cells, grid, opts, lambda r, _i: records.append(r), threads=threads)
        wall = time.perf_counter() - t0
    assert len(records) == len(cells) and all(r["status"] == "ok" for r in records), records
    return wall, started


def _noop(x: int) -> int:
    return x


def overhead(n: int) -> dict[str, float]:
    """Milliseconds per no-op task: submitted one after another (each waits for the last),
    as a cell's record is handled before the next is claimed and submitted."""
    from distributed import Client

    ms: dict[str, float] = {}
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        pool.submit(_noop, 0).result()  # (workers up)
        t0 = time.perf_counter()
        for i in range(n):
            pool.submit(_noop, i).result()
        ms["local processes (ProcessPoolExecutor)"] = 1000 * (time.perf_counter() - t0) / n
    with local_cluster(2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        client.submit(_noop, -1, pure=False).result()
        t0 = time.perf_counter()
        for i in range(n):
            client.submit(_noop, i, pure=False).result()
        ms["Dask LocalCluster"] = 1000 * (time.perf_counter() - t0) / n
    return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", default="numerical", help="the quick grid's one feature group kept")
    ap.add_argument("--seeds", type=int, default=1, help="seeds kept (0..N-1)")
    ap.add_argument("--noop", type=int, default=200, help="no-op tasks for the per-cell overhead")
    args = ap.parse_args()
    print(f"hardware: {hardware()}; {os.cpu_count()} cores; load (1 min) {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        grid = load_grid(trimmed_quick(args.features, args.seeds, folder), get_registry())
        cells = grid.runnable
        print(f"grid: quick, features {args.features}, {args.seeds} seeds: {len(cells)} cells")
        rows = []
        for workers in (1, 2):
            local = run_local(cells, grid.name, folder / f"local-{workers}", workers)
            dask, start = run_dask(cells, grid.name, folder / f"dask-{workers}", workers)
            rows.append((workers, local, dask, start))
    head = f"{'workers':>7}  {'local processes':>15}  {'Dask':>8}  {'Dask/local':>10}  {'(Dask start)':>12}"
    print("\n  " + head)
    for workers, local, dask, start in rows:
        print(f"  {workers:>7}  {local:>14.1f}s  {dask:>7.1f}s  {dask / local:>10.2f}  {start:>11.1f}s")
    for name, col in (("local processes", 1), ("Dask", 2)):
        print(f"  speed-up 1 -> 2 workers, {name}: {rows[0][col] / rows[1][col]:.2f}x")
    ms = overhead(args.noop)
    print(f"\nscheduling overhead per cell (mean of a no-op's round trip, {args.noop} tasks):")
    for name, v in ms.items():
        print(f"  {name:<40} {v:7.2f} ms")
    per_cell = statistics.mean(r[1] for r in rows) / len(cells)
    print(f"  (a cell of this grid takes about {per_cell:.1f} s)")
    ratios = {f"dask/local@{w}": d / lo for w, lo, d, _ in rows}
    ratios |= {f"speedup-1-to-2/{n}": rows[0][c] / rows[1][c] for n, c in (("local", 1), ("dask", 2))}
    emit("scale", ratios)


if __name__ == "__main__":
    main()
