"""Cell ids of the shipped grids are stable: a change to grid loading (parsing, the
override layers, validation) or to a plugin's defaults that changes any cell's config
changes its id, and would orphan the cells already in published stores. The fixture
tests/data/grid_ids.json holds, per grid (and per section, as `grid--section`), the
sorted ids; regenerate it only for a change that is meant to rerun cells, and say so
in CHANGELOG.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.grid import load_grid
from harness.plugins import get_registry

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = json.loads((ROOT / "tests" / "data" / "grid_ids.json").read_text())


def _variants() -> list[tuple[str, str | None]]:
    out = []
    for p in sorted((ROOT / "grids").glob("*.yaml")):
        sections = (yaml.safe_load(p.read_text()) or {}).get("sections") or {}
        out += [(p.stem, None)] + [(p.stem, s) for s in sections]
    return out


def test_every_shipped_grid_is_in_the_fixture():
    assert sorted(k if s is None else f"{k}--{s}" for k, s in _variants()) == sorted(EXPECTED)


@pytest.mark.parametrize(("grid", "section"), _variants())
def test_cell_ids_of_shipped_grids_are_stable(grid, section):
    loaded = load_grid(ROOT / "grids" / f"{grid}.yaml", get_registry(), section=section)
    key = grid if section is None else f"{grid}--{section}"
    assert sorted(c.id for c in loaded.cells) == EXPECTED[key]
