"""Scale-out: a grid's cells as tasks on a Dask distributed cluster (`harness run
--scheduler ADDRESS`; docs/scale-out.md).

The task graph is the grid's dependency graph: one teacher task per (dataset, teacher,
seed, budget) that a cell's distiller needs, submitted first and at a higher priority,
and the cells that need it depend on its future (the client submits such a cell once
its teacher's future is done), so no two workers train one teacher.
A teacher task trains the teacher into the run's teacher cache (--out/teachers, which
workers must share with each other: a shared filesystem) and the cells load it there.

As with the local executor, workers only compute and return records; the client writes
every record to the store as each finishes. Each cell is claimed (the store's claims
table) just before it is submitted, keeping about as many cells in flight as the
cluster has worker threads (plus a few queued), so two runs on one --out share the work
and an interrupted client leaves unclaimed cells for its rerun. A worker that dies
mid-cell: the scheduler reruns the cell on another worker, up to Dask's
`distributed.scheduler.allowed-failures` (default 3) deaths; after that the cell is
recorded as failed with the reason.

GPU cells (device cuda) ask for the worker resource GPU=1, so a worker started with
`--resources GPU=1` runs one at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import UsageError
from .grid import Cell
from .runner import RunOptions, prepare_teacher, run_cell, teacher_key
from .spec import CellSpec

#: a cell's teacher task runs before the cells (Dask runs higher priorities first)
TEACHER_PRIORITY = 10
#: cells claimed and queued beyond the cluster's worker threads
QUEUED_EXTRA = 2
#: how often (seconds) the client looks for workers that joined, to submit more cells
REFILL_S = 2.0


def connect(address: str, timeout_s: float = 30.0) -> Any:
    """A Dask client of the scheduler at `address`: tcp://host:port (any address Dask
    takes) or the path of a scheduler file (`dask scheduler --scheduler-file PATH`)."""
    from distributed import Client

    is_file = "://" not in address and (Path(address).exists() or address.endswith(".json"))
    try:
        if is_file:
            if not Path(address).is_file():
                raise UsageError(f"--scheduler {address}: scheduler file not found")
            return Client(scheduler_file=address, timeout=timeout_s)
        return Client(address, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError) as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UsageError(f"--scheduler {address}: cannot reach the Dask scheduler ({first})") from None


def local_cluster(workers: int) -> Any:
    """A Dask cluster on this machine: `workers` processes of one thread each (its
    dashboard on a free port)."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=":0")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _teacher_task(spec: CellSpec, opts: dict[str, Any], threads: int | None) -> dict[str, Any]:
    _set_threads(threads)
    return prepare_teacher(spec, RunOptions(**opts))


def _cell_task(spec: CellSpec, grid: str, opts: dict[str, Any], threads: int | None):
    _set_threads(threads)
    return run_cell(spec, grid, RunOptions(**opts))


def needs_teacher(cell: Cell) -> bool:
    from .plugins import get_registry

    return bool(get_registry().get("distiller", cell.spec.distiller.name).needs)


def gpu_workers(client: Any) -> int:
    """How many of the cluster's workers declare the resource GPU."""
    workers = client.scheduler_info().get("workers", {})
    return sum(1 for w in workers.values() if w.get("resources", {}).get("GPU", 0) >= 1)


class _Run:
    """One grid's cells on one client: the teachers, the window of cells, the records.

    A cell is submitted once its teacher's future is done (the client holds the
    dependency): as a graph dependency instead, Dask would run every cell of a teacher on
    the worker that holds the teacher's result (it places a task where its inputs are)."""

    def __init__(self, client, cells, grid, opts, on_record, claim, threads) -> None:
        self.client, self.grid, self.on_record, self.claim = client, grid, on_record, claim
        self.threads = threads
        self.opts = asdict(opts) | {"progress": False}
        self.resources = {"GPU": 1} if opts.device.startswith("cuda") else None
        self.pending: list[tuple[int, Cell, str | None]] = []
        self.running: dict[Any, tuple[int, Cell]] = {}
        self.teachers: dict[str, Any] = {}  # (teacher key: its future, until it ends)
        self.trained: dict[str, dict[str, Any]] = {}  # (teacher key: its task's result)
        self.adopted: set[str] = set()
        self.lost = 0
        self.tag = uuid.uuid4().hex[:8]  # (keys of this run: a killed client's never clash)
        for i, cell in enumerate(cells):  # every teacher first: they run before any cell
            key = teacher_key(cell.spec) if needs_teacher(cell) else None
            self.pending.append((i, cell, key))
            if key is not None and key not in self.teachers:
                self.teachers[key] = client.submit(
                    _teacher_task,
                    cell.spec,
                    self.opts,
                    threads,
                    key=f"teacher-{key}-{self.tag}",
                    priority=TEACHER_PRIORITY,
                    resources=self.resources,
                    pure=False,
                )

    def window(self) -> int:
        return max(1, sum(self.client.nthreads().values())) + QUEUED_EXTRA

    def submit_next(self) -> bool:
        """Claim and submit the first pending cell whose teacher is ready; False if none."""
        for j, (i, cell, key) in enumerate(self.pending):
            if key is not None and key not in self.trained:
                continue
            del self.pending[j]
            if self.claim is not None and not self.claim(cell):
                return True  # (passed over: another run has it)
            fut = self.client.submit(
                _cell_task,
                cell.spec,
                self.grid,
                self.opts,
                self.threads,
                key=f"cell-{cell.id[:12]}-{self.tag}",
                resources=self.resources,
                pure=False,
            )
            self.running[fut] = (i, cell)
            return True
        return False

    def fill(self) -> None:
        n = self.window()
        while len(self.running) < n and self.submit_next():
            pass

    def waiting_on(self) -> list[Any]:
        """The futures whose end lets the run go on: running cells, teachers not done."""
        return [*self.running, *self.teachers.values()]

    def teacher_done(self, key: str) -> None:
        """Keep a teacher task's result here and release its future: Dask would recompute
        a finished task whose worker dies while a client holds it."""
        fut = self.teachers.pop(key)
        try:
            self.trained[key] = fut.result()
        except Exception as e:  # (e.g. its worker died too often): the cells train it themselves
            self.trained[key] = {"key": key, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        fut.release()

    def finish(self, fut: Any) -> None:
        from concurrent.futures import CancelledError

        from distributed import KilledWorker

        from .executor import failed_record

        i, cell = self.running.pop(fut)
        try:
            record = fut.result()
        except KilledWorker as e:
            record = failed_record(cell, self.grid, f"worker died running the cell, too often to retry: {e}")
        except CancelledError:  # (the scheduler was lost): not run; the rerun runs it
            self.lost += 1
            return
        except Exception as e:  # e.g. a record that could not be pickled
            record = failed_record(cell, self.grid, f"{type(e).__name__}: {str(e)[:300]}")
        finally:
            fut.release()  # (else a dead worker's finished cells would be computed again)
        self._adopt_teacher(record)
        self.on_record(record, i)

    def _adopt_teacher(self, record: dict[str, Any]) -> None:
        """The first record of a teacher's cells carries the teacher's training record
        (as with the local executor), not the cache's copy the cell loaded."""
        t = record.get("teacher_run")
        if not t or t.get("key") in self.adopted or t["key"] not in self.trained:
            return
        self.adopted.add(t["key"])
        trained = self.trained[t["key"]]
        if t.get("cached") and not trained.get("cached", True):
            record["teacher_run"] = trained

    def cancel(self) -> None:
        self.client.cancel([*self.running, *self.teachers.values()])


def execute_on(
    client: Any,
    cells: list[Cell],
    grid: str,
    opts: RunOptions,
    on_record: Callable[[dict[str, Any], int], None],
    claim: Callable[[Cell], bool] | None = None,
    threads: int | None = None,
) -> int:
    """Run `cells` on a Dask client, calling on_record(record, index) here as each ends.
    claim(cell) is asked just before a cell is submitted; a cell it refuses is passed
    over. threads: torch threads per worker (None: the worker's own setting; Dask's
    worker processes start with OMP_NUM_THREADS=1). Returns how many cells were lost
    with the scheduler (not recorded; a rerun runs them)."""
    from distributed import wait

    if not cells:
        return 0
    run = _Run(client, cells, grid, opts, on_record, claim, threads)
    try:
        run.fill()
        while run.running or run.pending:
            waiting = run.waiting_on()
            if not waiting:  # (every teacher done, nothing in flight: fill() submits)
                run.fill()
                continue
            try:
                done, _ = wait(waiting, timeout=REFILL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:  # (nothing finished within REFILL_S)
                done = set()
            keys = {f: k for k, f in run.teachers.items()}
            for fut in done:
                if fut in run.running:
                    run.finish(fut)
                elif fut in keys:
                    run.teacher_done(keys[fut])
            run.fill()  # (also when a teacher is ready, or workers joined: the window grows)
    except KeyboardInterrupt:
        run.cancel()  # cells not finished are dropped (their claims go; they rerun next time)
        raise
    finally:
        if run.teachers:  # (teachers no cell of this run needs now)
            run.client.cancel(list(run.teachers.values()))
    return run.lost


def dashboard_link(client: Any) -> str | None:
    try:
        return client.dashboard_link or None
    except Exception:  # (no dashboard: bokeh absent, or the scheduler runs none)
        return None


def wait_note(opts: RunOptions, client: Any) -> str | None:
    """A line to print when cuda cells have no GPU worker to run on (yet)."""
    if opts.device.startswith("cuda") and gpu_workers(client) == 0:
        return (
            "no worker declares a GPU yet: cuda cells wait for one "
            "(start workers with: dask worker ADDRESS --nworkers 1 --nthreads 1 --resources GPU=1)"
        )
    return None


__all__ = ["connect", "dashboard_link", "execute_on", "local_cluster", "wait_note"]
