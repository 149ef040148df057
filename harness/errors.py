"""Errors the harness raises on purpose.

`UsageError` is bad input from the user (a grid, a flag, a path): the CLI prints it as
one line and exits with code 2 before anything is written. `CellError` is a failure
inside one cell (a NaN loss, a plugin that raised): the cell is recorded as failed and
the grid goes on.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """Base class of the harness's own errors."""


class UsageError(HarnessError):
    """Bad input from the user; reported as one line, exit code 2, nothing written."""


class PluginError(HarnessError):
    """A plugin registered something invalid or clashing."""


class CellError(HarnessError):
    """A cell cannot finish (e.g. its loss became NaN); recorded as failed."""


def closest(name: str, known: Iterable[str], n: int = 3) -> str:
    """Return a ' (closest: a, b)' hint for an unknown name, or '' when none is close."""
    matches = difflib.get_close_matches(name, sorted(known), n=n, cutoff=0.7)
    return f" (closest: {', '.join(matches)})" if matches else ""
