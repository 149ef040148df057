"""Where data lives by default: $HARNESS_DATA, else ./datasets (the repository's
datasets/ folder when run from a checkout)."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    return Path(os.environ.get("HARNESS_DATA", "datasets")).expanduser()
