"""The record of one cell: what the runner returns, the store keeps and the cli and the
leaderboard read. One typed dataclass; its column fields (`COLUMNS`, in order) are the
store's `cells` table columns, the keys the cli lists and the leaderboard groups by.

A record travels as its dict (`to_dict()`: JSON in the store, a pickle from a worker):
fields never set are left out of it, as they were before the record was typed, so old
stores load unchanged (`Record.from_dict`) and their records read back the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .errors import UsageError


class _Unset:
    """The value of a field never set: left out of the record's dict; falsy."""

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNSET"  # (one instance, across pickles)


UNSET: Any = _Unset()


def _column() -> Any:
    return field(default=None, metadata={"column": True})


def _extra() -> Any:
    return field(default=UNSET)


@dataclass
class Record:
    """One cell's record. Columns: what the cell is and how it ended; the rest: its
    config and what it measured (set once the cell got that far)."""

    id: str = _column()
    grid: str | None = _column()
    status: str = _column()  # running (never stored), ok, failed or skipped
    reason: str | None = _column()  # why it failed or was skipped
    dataset: str = _column()
    task: str = _column()
    teacher: str = _column()
    student: str = _column()
    distiller: str = _column()
    pruner: str = _column()
    method: str | None = _column()
    seed: int = _column()
    config: dict[str, Any] | None = None
    worker: str | None = _extra()
    started: float | None = _extra()
    finished: float | None = _extra()
    command: str | None = _extra()  # the command that reruns its grid (`run_command`)
    env: dict[str, Any] | None = _extra()
    data_note: str | None = _extra()
    teacher_run: dict[str, Any] | None = _extra()
    outcomes: dict[str, Any] | None = _extra()
    metrics: dict[str, Any] | None = _extra()
    size: dict[str, Any] | None = _extra()
    energy: dict[str, Any] | None = _extra()
    times: dict[str, Any] | None = _extra()
    history: list[dict[str, Any]] | None = _extra()
    levels: list[dict[str, Any]] | None = _extra()
    diagnostics: dict[str, Any] | None = _extra()
    memory: dict[str, Any] | None = _extra()
    error: str | None = _extra()

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data: every column and the config, and the other fields
        that were set."""
        return {f.name: getattr(self, f.name) for f in _FIELDS if getattr(self, f.name) is not UNSET}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        """A record read back (a store's JSON); raises UsageError on a key no record has."""
        unknown = [k for k in d if k not in _NAMES]
        if unknown:
            raise UsageError(f"record {d.get('id')!r}: unknown field {unknown[0]!r}")
        return cls(**d)


_FIELDS = fields(Record)
_NAMES = {f.name for f in _FIELDS}

#: The store's `cells` columns, in order: what a cell is and how it ended.
COLUMNS: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.metadata.get("column"))

#: The columns `harness list` shows (and their headers), the worker beside them.
LIST_COLUMNS: tuple[str, ...] = (
    "id",
    "status",
    "dataset",
    "task",
    "student",
    "method",
    "seed",
    "worker",
    "reason",
)

#: What a cell is, as the boards and the plans label it (a subset of COLUMNS).
CELL_DIMS: tuple[str, ...] = ("dataset", "task", "teacher", "student", "method", "seed")
