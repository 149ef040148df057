"""harness: benchmark model compression by distillation and pruning, from one grid file."""

from __future__ import annotations

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (the decorator plugin authors use)

__all__ = ["__version__", "hookimpl"]
