"""Stage 6, record: the names a cell is listed under (dataset, models, method label) and
the `Record` the runner fills in as the cell goes."""

from __future__ import annotations

from typing import Any

from ..grid import dataset_label, model_label
from ..plugins import get_registry
from ..record import Record
from ..spec import CellSpec


def _spec(spec: CellSpec | dict[str, Any]) -> CellSpec:
    return spec if isinstance(spec, CellSpec) else CellSpec.from_config(spec)


def method_label(spec: CellSpec | dict[str, Any]) -> str:
    """The leaderboard's name for a cell, joined as the papers do: SP-SAD, LTH-KD, ...;
    the plain student is named by its model (DCNN). (A config dict is read as its spec.)"""
    spec = _spec(spec)
    reg = get_registry()
    parts = []
    for kind, part in (("pruner", spec.pruner), ("distiller", spec.distiller)):
        if part.name != "none":
            label = reg.get(kind, part.name).display()
            if part.shown:
                label += "(" + ",".join(f"{k}={part.kwargs()[k]}" for k in part.shown) + ")"
            parts.append(label)
    if not parts:
        return reg.get("model", spec.student.model).display()
    return "-".join(parts)


def new_record(spec: CellSpec, grid: str) -> Record:
    """The record of a cell not yet run (status "running"): its columns and config."""
    config = spec.to_config()
    return Record(
        id=spec.id,
        grid=grid,
        status="running",
        reason=None,
        dataset=dataset_label(config["dataset"]),
        task=spec.task,
        teacher=model_label(config["teacher"]),
        student=model_label(config["student"]),
        distiller=spec.distiller.name,
        pruner=spec.pruner.name,
        seed=spec.seed,
        config=config,
    )


def base_record(config: CellSpec | dict[str, Any], cell_id: str, grid: str) -> dict[str, Any]:
    """`new_record` as a dict (for callers that hold a cell's config and id)."""
    spec = _spec(config)
    if spec.id != cell_id:
        raise ValueError(f"cell id {cell_id} is not the id of its config ({spec.id})")
    return new_record(spec, grid).to_dict()
