"""Executors: run a grid's cells sequentially or in N worker processes.

Workers only compute and return records; the calling process writes every record to
the store, in one transaction per cell, as each finishes. A worker that dies turns its
cells into failed records; the others go on.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from typing import Any

import torch

from .grid import Cell
from .runner import RunOptions, base_record, run_cell


def _init_worker(threads: int, plugins_env: str | None) -> None:
    torch.set_num_threads(threads)
    if plugins_env is not None:
        os.environ["HARNESS_PLUGINS"] = plugins_env


def _work(config: dict[str, Any], cell_id: str, grid: str, opts: dict[str, Any]) -> dict[str, Any]:
    return run_cell(config, cell_id, grid, RunOptions(**opts))


def execute(
    cells: list[Cell],
    grid: str,
    opts: RunOptions,
    jobs: int,
    on_record: Callable[[dict[str, Any], int], None],
) -> None:
    """Run `cells`, calling on_record(record, index) in this process as each ends."""
    if not cells:
        return
    if jobs <= 1:
        for i, cell in enumerate(cells):
            on_record(run_cell(cell.config, cell.id, grid, opts), i)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = mp.get_context("spawn")  # fork is unsafe with torch's thread pools and CUDA
    worker_opts = asdict(opts) | {"progress": False}
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(threads, os.environ.get("HARNESS_PLUGINS")),
    ) as pool:
        futures = {pool.submit(_work, c.config, c.id, grid, worker_opts): (i, c) for i, c in enumerate(cells)}
        try:
            for fut in as_completed(futures):
                i, cell = futures[fut]
                try:
                    record = fut.result()
                except BrokenProcessPool as e:
                    record = _failed(cell, grid, f"worker process died: {e}")
                except Exception as e:  # e.g. a record that could not be pickled
                    record = _failed(cell, grid, f"{type(e).__name__}: {e}")
                on_record(record, i)
        except KeyboardInterrupt:
            # stop at once: cells not started are dropped (they rerun next time)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    sys.stderr.flush()


def _failed(cell: Cell, grid: str, reason: str) -> dict[str, Any]:
    record = base_record(cell.config, cell.id, grid)
    record.update(status="failed", reason=reason, method=cell.config["distiller"]["name"])
    return record
