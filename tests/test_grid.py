"""Grid loading, expansion into cells, ids, overrides and compatibility filtering."""

from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.grid import cell_id, load_grid
from harness.plugins import get_registry

BASE = """
datasets:
  - name: imdb-movies
    features: [numerical, social]
teacher: {model: dcnn, preset: teacher}
student: [{model: dcnn, preset: student}, {model: dcnn, channels: [4], hidden: 8}]
distillers: [none, {name: kd, alpha: [0.5, 0.9]}]
seeds: 2
"""


def test_every_combination_is_a_cell(write_grid):
    grid = load_grid(write_grid(BASE), get_registry())
    # 2 feature groups x 2 students x 3 distiller variants x 1 pruner x 2 seeds
    assert len(grid.cells) == 24
    assert len({c.id for c in grid.cells}) == 24
    labels = {c.describe()["dataset"] for c in grid.cells}
    assert labels == {"imdb-movies(features=numerical)", "imdb-movies(features=social)"}
    students = {c.describe()["student"] for c in grid.cells}
    assert students == {"dcnn:student", "dcnn(channels=[4], hidden=8)"}
    alphas = sorted(
        {
            c.config["distiller"]["params"]["alpha"]
            for c in grid.cells
            if c.config["distiller"]["name"] == "kd"
        }
    )
    assert alphas == [0.5, 0.9]
    assert {c.seed for c in grid.cells} == {0, 1}
    assert grid.name == "grid"  # the file's stem


def test_defaults_are_filled_so_explicit_defaults_hash_alike(write_grid, tmp_path):
    a = load_grid(
        write_grid(
            """
        datasets: [imdb-movies]
        teacher: {model: dcnn}
        student: {model: dcnn}
        distillers: [kd]
    """,
            filename="a.yaml",
        ),
        get_registry(),
    )
    b = load_grid(
        write_grid(
            """
        datasets: [{name: imdb-movies, features: numerical}]
        teacher: {model: dcnn, kernel: 3}
        student: {model: dcnn}
        distillers: [{name: kd, T: 4, alpha: 0.9}]
        seeds: [0]
        budget: {epochs: 10}
    """,
            filename="b.yaml",
        ),
        get_registry(),
    )
    assert [c.id for c in a.cells] == [c.id for c in b.cells]


def test_energy_settings_do_not_change_the_cell_id(write_grid):
    text = "datasets: [imdb-movies]\nteacher: {model: dcnn}\nstudent: {model: dcnn}\ndistillers: [none]\n"
    a = load_grid(write_grid(text, filename="a.yaml"), get_registry()).cells[0]
    b = load_grid(
        write_grid(text + "energy: {inference_min_seconds: 3}\n", filename="b.yaml"), get_registry()
    ).cells[0]
    assert a.id == b.id == cell_id(b.config)
    assert b.config["energy"]["inference_min_seconds"] == 3.0


def test_hparams_and_overrides_apply_per_method(write_grid):
    grid = load_grid(
        write_grid("""
        datasets: [imdb-movies]
        teacher: {model: dcnn}
        student: {model: dcnn}
        distillers: [none, kd]
        budget: {epochs: 5}
        train: {lr: 0.001}
        teacher_train: {lr: 0.01}
        hparams: {kd: {alpha: 0.3}}
        overrides: {kd: {train: {lr: 0.1}, budget: {epochs: 7}}}
    """),
        get_registry(),
    )
    by = {c.config["distiller"]["name"]: c.config for c in grid.cells}
    assert by["kd"]["distiller"]["params"]["alpha"] == 0.3
    assert by["kd"]["train"]["lr"] == 0.1 and by["kd"]["budget"]["epochs"] == 7
    assert by["none"]["train"]["lr"] == 0.001 and by["none"]["budget"]["epochs"] == 5
    # the teacher's settings do not depend on the student's method
    assert by["kd"]["teacher_train"] == by["none"]["teacher_train"]
    assert by["kd"]["teacher_train"]["lr"] == 0.01
    assert by["kd"]["budget"]["teacher_epochs"] == by["none"]["budget"]["teacher_epochs"] == 5


def test_overrides_must_name_a_method_of_the_grid(write_grid):
    with pytest.raises(UsageError, match=r"grid.yaml:6: overrides.sad: 'sad' is not a distiller"):
        load_grid(
            write_grid("""
            datasets: [imdb-movies]
            teacher: {model: dcnn}
            student: {model: dcnn}
            distillers: [none, kd]
            overrides: {sad: {train: {lr: 0.1}}}
        """),
            get_registry(),
        )


def test_override_keys_are_checked_with_their_line(write_grid):
    with pytest.raises(
        UsageError,
        match=r"grid.yaml:8: overrides.kd.budget.epoch: unknown key 'epoch' "
        r"\(closest: epochs\)",
    ):
        load_grid(
            write_grid("""
            datasets: [imdb-movies]
            teacher: {model: dcnn}
            student: {model: dcnn}
            distillers: [kd]
            overrides:
              kd:
                budget: {epoch: 3}
        """),
            get_registry(),
        )


def test_repeated_entries_run_once(write_grid):
    grid = load_grid(
        write_grid("""
        datasets: [imdb-movies, imdb-movies]
        teacher: {model: dcnn}
        student: {model: dcnn}
        distillers: [none]
    """),
        get_registry(),
    )
    assert len(grid.cells) == 1


def test_bool_is_not_a_number(write_grid):
    with pytest.raises(UsageError, match="budget.epochs: expected int, got bool True"):
        load_grid(
            write_grid("""
            datasets: [imdb-movies]
            teacher: {model: dcnn}
            student: {model: dcnn}
            distillers: [none]
            budget: {epochs: true}
        """),
            get_registry(),
        )


def test_choices_are_enforced(write_grid):
    with pytest.raises(
        UsageError,
        match=r"train.optimizer: 'adamm' is not one of adam, adamw, "
        r"sgd, adagrad \(closest: adam",
    ):
        load_grid(
            write_grid("""
            datasets: [imdb-movies]
            teacher: {model: dcnn}
            student: {model: dcnn}
            distillers: [none]
            train: {optimizer: adamm}
        """),
            get_registry(),
        )


def test_shipped_grids_validate():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "grids").glob("*.yaml")):
        grid = load_grid(path, get_registry())
        for cell in grid.skipped:  # only data that is not on this machine may skip a cell
            assert "not found" in cell.skip, (path, cell.skip)
        assert grid.cells, path


def test_a_pruners_overrides_set_its_cells_distiller_hyper_parameters(write_grid):
    grid = load_grid(
        write_grid("""
        datasets: [imdb-movies]
        teacher: {model: dcnn}
        student: {model: dcnn}
        distillers: [kd, sad]
        pruners: [none, sp]
        hparams: {sad: {beta: 200}}
        overrides:
          sp: {distiller: {beta: 100, alpha: 0.8}, budget: {epochs: 16}}
    """),
        get_registry(),
    )
    by = {(c.config["pruner"]["name"], c.config["distiller"]["name"]): c.config for c in grid.cells}
    assert by[("none", "sad")]["distiller"]["params"]["beta"] == 200
    assert by[("sp", "sad")]["distiller"]["params"]["beta"] == 100
    assert by[("sp", "sad")]["distiller"]["params"]["alpha"] == 0.8
    assert by[("sp", "kd")]["distiller"]["params"]["alpha"] == 0.8  # kd takes alpha, not beta
    assert by[("sp", "kd")]["budget"]["epochs"] == 16 and by[("none", "kd")]["budget"]["epochs"] == 10
    with pytest.raises(UsageError, match="no distiller of this grid takes 'gamma'"):
        load_grid(
            write_grid(
                """
            datasets: [imdb-movies]
            teacher: {model: dcnn}
            student: {model: dcnn}
            distillers: [kd]
            pruners: [sp]
            overrides: {sp: {distiller: {gamma: 1}}}
        """,
                filename="bad.yaml",
            ),
            get_registry(),
        )
