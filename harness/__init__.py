"""harness: benchmark model compression by distillation and pruning, from one grid file."""

from __future__ import annotations

__version__ = "0.1.0"

#: The distribution's name on the package index (the import package and the command are
#: `harness`; the index's own `harness` is an unrelated project). A plugin depends on it.
DISTRIBUTION = "compress-harness"

from .hookspecs import hookimpl  # noqa: E402  (the decorator plugin authors use)

__all__ = ["DISTRIBUTION", "__version__", "hookimpl"]
