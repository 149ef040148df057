"""Executors: run a grid's cells sequentially or in N worker processes.

Workers only compute and return records; the calling process writes every record to
the store, in one transaction per cell, as each finishes. A worker that dies turns its
cells into failed records; the others go on.

Each cell is claimed (the `claim` callback, the store's claims table) just before it is
handed to a worker, never all at once, so two runs on one output folder share the work.
Workers die with their parent: the kernel kills them when it exits (Linux
PR_SET_PDEATHSIG) and a watchdog thread in each polls the parent's pid (elsewhere),
so a kill -9 of the run leaves no worker computing (and holding a GPU) behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from typing import Any

import torch

from .grid import Cell
from .runner import RunOptions, new_record, run_cell
from .spec import CellSpec

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """End this process when `parent` is gone: SIGKILL from the kernel on Linux, and a
    daemon thread that polls os.getppid() everywhere (also covers a parent that died
    before prctl was called)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still works

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(poll_s)

    threading.Thread(target=watch, name="harness-parent-watchdog", daemon=True).start()


def _init_worker(threads: int, plugins_env: str | None, parent: int) -> None:
    die_with_parent(parent)
    torch.set_num_threads(threads)
    if plugins_env is not None:
        os.environ["HARNESS_PLUGINS"] = plugins_env


def _work(spec: CellSpec, grid: str, opts: dict[str, Any]) -> dict[str, Any]:
    return run_cell(spec, grid, RunOptions(**opts))


def execute(
    cells: list[Cell],
    grid: str,
    opts: RunOptions,
    jobs: int,
    on_record: Callable[[dict[str, Any], int], None],
    claim: Callable[[Cell], bool] | None = None,
) -> None:
    """Run `cells`, calling on_record(record, index) in this process as each ends.
    claim(cell) is asked just before a cell starts; a cell it refuses (another run has
    it) is passed over."""
    if not cells:
        return
    if jobs <= 1:
        for i, cell in enumerate(cells):
            if claim is None or claim(cell):
                on_record(run_cell(cell.spec, grid, opts), i)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")  # fork is unsafe with torch's thread pools and CUDA
    worker_opts = asdict(opts) | {"progress": False}
    queue = iter(enumerate(cells))
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(threads, os.environ.get("HARNESS_PLUGINS"), os.getpid()),
    ) as pool:
        running: dict[Future, tuple[int, Cell]] = {}

        def submit_next() -> None:
            for i, cell in queue:
                if claim is not None and not claim(cell):
                    continue
                try:
                    running[pool.submit(_work, cell.spec, grid, worker_opts)] = (i, cell)
                except BrokenProcessPool as e:  # a worker died earlier: the pool takes no more
                    on_record(failed_record(cell, grid, f"worker process died: {e}"), i)
                    continue
                return

        try:
            for _ in range(jobs):
                submit_next()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    i, cell = running.pop(fut)
                    try:
                        record = fut.result()
                    except BrokenProcessPool as e:
                        record = failed_record(cell, grid, f"worker process died: {e}")
                    except Exception as e:  # e.g. a record that could not be pickled
                        record = failed_record(cell, grid, f"{type(e).__name__}: {e}")
                    on_record(record, i)
                    submit_next()
        except KeyboardInterrupt:
            # stop at once: cells not started are dropped (they rerun next time)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    sys.stderr.flush()


def failed_record(cell: Cell, grid: str, reason: str) -> dict[str, Any]:
    """The record of a cell that never returned one (its worker died)."""
    record = new_record(cell.spec, grid)
    record.status, record.reason, record.method = "failed", reason, cell.spec.distiller.name
    return record.to_dict()
