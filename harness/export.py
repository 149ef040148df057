"""Export the cells of a results database as one table (pandas): one row per cell, for
users who analyse elsewhere, as RecBole and Elliot write their results as CSV/TSV.

Columns: the store's own (id, grid, status, reason, dataset, task, teacher, student,
distiller, pruner, method, seed), then every number of the record flattened with dots
(pandas.json_normalize): `metrics.test.mae`, `metrics.val.ndcg@50`, `size.params`,
`energy.train_j`, `energy.meter`, `times.train_s`, ...; then the cell's parameters
(`config.distiller.params.alpha`, `config.budget.epochs`, ...) and its environment
(`env.cpu`, `env.versions.torch`, ...). Lists (a model's channels) are written as JSON
text. Left out: the per-example outcomes, the per-epoch history, the pruning levels,
the distiller diagnostics, the traceback of a failed cell and the teacher's record
(the leaderboards show those).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from .record import COLUMNS

#: record keys not exported (arrays and nested per-epoch lists; see the module doc)
LEFT_OUT = ("outcomes", "history", "levels", "diagnostics", "error", "teacher_run")

FORMATS = ("csv", "json")


def _cell(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | tuple | dict) else v


def cells_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record; columns as the module doc says, the store's first."""
    flat = [{k: v for k, v in r.items() if k not in LEFT_OUT} for r in records]
    df = pd.json_normalize(flat, sep=".")
    if df.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].map(_cell)
    first = [c for c in COLUMNS if c in df.columns]
    groups = ("metrics.", "size.", "energy.", "times.", "config.", "env.")
    ordered = first + [c for g in groups for c in sorted(df.columns) if c.startswith(g)]
    rest = sorted(c for c in df.columns if c not in ordered)
    return df[ordered + rest]


def to_text(df: pd.DataFrame, fmt: str) -> str:
    """The frame as CSV (with a header) or as a JSON list of one object per cell; the
    JSON is written by the json module from the frame's records so floats keep every
    digit (pandas' to_json rounds them to 15), NaN as null."""
    if fmt == "csv":
        return df.to_csv(index=False)

    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        return v.item() if hasattr(v, "item") else v

    rows = [{k: clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]
    return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
