"""harness.spec: the frozen, typed, hashed cell spec."""

from __future__ import annotations

import dataclasses
import glob
import json
import pickle
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from harness.errors import UsageError
from harness.grid import cell_id, load_grid
from harness.plugins import get_registry
from harness.spec import CellSpec, FrozenDict

ROOT = Path(__file__).resolve().parent.parent
GRIDS = sorted(glob.glob(str(ROOT / "grids" / "*.yaml")))


def all_cells() -> list:
    cells = []
    for path in GRIDS:
        sections = (yaml.safe_load(Path(path).read_text()) or {}).get("sections") or {}
        for section in [None, *sections]:
            cells += load_grid(path, get_registry(), section=section).cells
    return cells


def test_spec_id_equals_the_config_hash_of_every_cell_of_every_grid():
    cells = all_cells()
    assert len(cells) > 100
    for cell in cells:
        assert cell.spec.id == cell_id(cell.config) == cell.id
        assert cell.spec.to_config() == cell.config  # (the spec loses nothing)
        assert CellSpec.from_config(cell.spec.to_config()) == cell.spec


def test_spec_rebuilds_the_ids_stored_in_published_stores(tmp_path):
    stores = sorted(glob.glob("/tmp/stores/*.db"))
    if not stores:
        pytest.skip("no published stores copied at /tmp/stores")
    seen = 0
    for path in stores:
        copy = tmp_path / Path(path).name
        shutil.copy(path, copy)
        conn = sqlite3.connect(copy)

        for cid, record in conn.execute("SELECT id, record FROM cells"):
            config = json.loads(record)["config"]
            assert CellSpec.from_config(config).id == cid
            seen += 1
        conn.close()
    assert seen > 0


def test_spec_is_frozen_down_to_its_options():
    spec = all_cells()[0].spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.budget.epochs = 1  # type: ignore[misc]
    assert isinstance(spec.student.params, FrozenDict)
    with pytest.raises(TypeError, match="frozen"):
        spec.student.params["x"] = 1  # type: ignore[index]
    hash(spec)  # (hashable, so usable as a key)


def test_kwargs_thaw_options_into_the_plain_values_plugins_received():
    for cell in all_cells():
        assert cell.spec.student.kwargs() == cell.config["student"]["params"]
        for key, value in cell.spec.student.kwargs().items():
            assert type(value) is type(cell.config["student"]["params"][key])


def test_spec_pickles_to_an_equal_spec_with_the_same_id():
    for cell in all_cells()[:50]:
        back = pickle.loads(pickle.dumps(cell.spec))
        assert back == cell.spec and back.id == cell.spec.id
        assert isinstance(back.student.params, FrozenDict)


def test_a_bad_field_is_a_one_line_error_naming_it():
    config = all_cells()[0].config
    bad = {**config, "budget": {**config["budget"], "epoch": 3}}
    with pytest.raises(UsageError, match="budget: unknown field 'epoch'"):
        CellSpec.from_config(bad)
    missing = {k: v for k, v in config.items() if k != "seed"}
    with pytest.raises(UsageError, match="missing field 'seed'"):
        CellSpec.from_config(missing)
    with pytest.raises(UsageError, match="seed: expected an int"):
        CellSpec.from_config({**config, "seed": "0"})


def test_train_autocast_at_its_default_keeps_ids_and_teacher_caches():
    # train.autocast came after stores and teacher caches existed: "none" (spelled out or
    # not) keeps a cell's id and its teacher's cache key; bf16 gives new ones, the
    # teacher's only when the teacher trains in it (teacher_train.autocast)
    from harness.runner.teacher import teacher_key

    spec = load_grid(Path("grids/quick.yaml"), get_registry()).cells[0].spec
    config = spec.to_config()
    assert config["train"]["autocast"] == "none"
    old = {
        s: ({k: v for k, v in c.items() if k != "autocast"} if s.endswith("train") else c)
        for s, c in config.items()
    }
    loaded = CellSpec.from_config(old)
    assert loaded.train.autocast == "none" and loaded.id == spec.id == cell_id(old)
    assert teacher_key(loaded) == teacher_key(spec)
    student_bf16 = CellSpec.from_config({**config, "train": {**config["train"], "autocast": "bf16"}})
    assert student_bf16.id != spec.id and teacher_key(student_bf16) == teacher_key(spec)
    teacher_bf16 = CellSpec.from_config(
        {**config, "teacher_train": {**config["teacher_train"], "autocast": "bf16"}}
    )
    assert teacher_bf16.id != spec.id and teacher_key(teacher_bf16) != teacher_key(spec)


def test_train_autocast_takes_only_its_choices(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(
        "datasets: [imdb-movies]\nteacher: {model: dcnn}\nstudent: {model: dcnn}\n"
        "distillers: [none]\ntrain: {autocast: fp8}\n"
    )
    with pytest.raises(UsageError, match=r"train.autocast: 'fp8' is not one of none, bf16, fp16"):
        load_grid(grid, get_registry())


def test_train_compile_at_its_default_keeps_ids_and_old_configs_load():
    # train.compile came after stores existed: false (spelled out or not) keeps the id a
    # config without it had, true gives a new one, and a stored config that lacks it
    # loads as false
    from harness.runner.teacher import teacher_key

    spec = load_grid(Path("grids/quick.yaml"), get_registry()).cells[0].spec
    config = spec.to_config()
    assert config["train"]["compile"] is False
    old = {**config, "train": {k: v for k, v in config["train"].items() if k != "compile"}}
    loaded = CellSpec.from_config(old)
    assert loaded.train.compile is False and loaded.id == spec.id == cell_id(old)
    on = {**config, "train": {**config["train"], "compile": True}}
    on["teacher_train"] = {**config["teacher_train"], "compile": True}
    assert CellSpec.from_config(on).id != spec.id
    assert teacher_key(CellSpec.from_config(on)) == teacher_key(spec)  # a teacher has no distiller
