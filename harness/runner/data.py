"""Stage 1, prepare data: the cell's dataset, loaded once per process and kept on the
device."""

from __future__ import annotations

from ..api import DataBundle
from ..errors import CellError
from ..plugins import get_registry
from ..spec import CellSpec, canonical

_DATA: dict[str, DataBundle] = {}


def load_data(spec: CellSpec, device: str) -> DataBundle:
    """The cell's data, loaded once per process and kept on the device."""
    ds = spec.dataset
    key = canonical({"dataset": ds.name, "params": ds.params, "task": spec.task, "device": device})
    if key not in _DATA:
        if len(_DATA) >= 4:  # bound memory on grids with many datasets
            _DATA.pop(next(iter(_DATA)))
        cls = get_registry().get("dataset", ds.name)
        bundle = cls(**ds.kwargs()).load(spec.task)
        if bundle.task != spec.task:
            raise CellError(f"dataset {ds.name!r} returned task {bundle.task!r}, asked for {spec.task!r}")
        _DATA[key] = bundle.to(device)
    return _DATA[key]
