"""The plugin system: entry points, validation of what is registered, clashes, and a
third-party plugin installed as pip would install it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import plugins
from harness.api import Distiller, Pruner
from harness.errors import PluginError, UsageError
from harness.hookspecs import hookimpl


def test_builtins_come_through_entry_points():
    reg = plugins.get_registry()
    assert {"movies", "distill", "prune", "energy"} <= set(reg.infos)
    for name in ("movies", "distill", "prune", "energy"):
        assert reg.infos[name].source == "built-in"
    assert reg.entries["distiller"]["kd"].plugin == "distill"
    assert reg.entries["dataset"]["imdb-movies"].plugin == "movies"
    assert {"nvml-energy", "nvml-power", "rapl", "cpu-estimate"} <= set(reg.names("energy_meter"))


def test_unknown_name_suggests_the_closest():
    reg = plugins.get_registry()
    with pytest.raises(UsageError, match=r"unknown distiller 'kdd' \(closest: kd\)"):
        reg.get("distiller", "kdd")
    with pytest.raises(UsageError, match=r"unknown pruner 'zzz' \(known: lth, lth-u, none, sp, ss\)"):
        reg.get("pruner", "zzz")


def test_duplicate_name_is_rejected_naming_both_plugins():
    class KD2(Distiller):
        name = "kd"

        def loss(self, step):
            return step.task_loss

    class Clash:
        @hookimpl
        def harness_register_distillers(self, register):
            register(KD2)

    with pytest.raises(PluginError, match="'kd' is registered by both plugin"):
        plugins.register_plugin(Clash(), "clash")
    plugins.reset_registry()


@pytest.mark.parametrize(
    "bad, message",
    [
        (object, "not a Distiller subclass"),
        (type("NoName", (Distiller,), {"loss": lambda self, s: s.task_loss}), "without a valid name"),
        (
            type(
                "BadTask",
                (Distiller,),
                {"name": "bt", "tasks": frozenset({"regression"}), "loss": lambda self, s: s.task_loss},
            ),
            "unknown task",
        ),
        (
            type(
                "BadNeeds",
                (Distiller,),
                {"name": "bn", "needs": frozenset({"gradients"}), "loss": lambda self, s: s.task_loss},
            ),
            "needs must be within",
        ),
    ],
)
def test_invalid_registrations_are_refused(bad, message):
    class P:
        @hookimpl
        def harness_register_distillers(self, register):
            register(bad)

    with pytest.raises(PluginError, match=message):
        plugins.register_plugin(P(), "bad")
    plugins.reset_registry()


def test_pruner_structure_is_validated():
    class Odd(Pruner):
        name = "odd"
        structure = "diagonal"

        def fit(self, fit):
            return fit.student

    class P:
        @hookimpl
        def harness_register_pruners(self, register):
            register(Odd)

    with pytest.raises(PluginError, match="structure must be None or one of"):
        plugins.register_plugin(P(), "odd")
    plugins.reset_registry()


def test_harness_plugins_env_limits_loading(monkeypatch):
    monkeypatch.setenv("HARNESS_PLUGINS", "movies,energy")
    plugins.reset_registry()
    try:
        reg = plugins.get_registry()
        assert set(reg.infos) == {"movies", "energy", "default"}
        assert reg.names("distiller") == ["none"]  # (the core's default plugin's)
    finally:
        plugins.reset_registry()


def test_the_core_registers_its_baselines_whatever_plugins_load(monkeypatch):
    monkeypatch.setenv("HARNESS_PLUGINS", "")
    plugins.reset_registry()
    try:
        reg = plugins.get_registry()
        assert set(reg.infos) == {"default"} and reg.infos["default"].source == "built-in (default)"
        assert reg.names("distiller") == ["none"] and reg.names("pruner") == ["none"]
        assert reg.names("energy_meter") == ["cpu-estimate"]
        assert reg.entries["pruner"]["none"].plugin == "default"
    finally:
        plugins.reset_registry()


@pytest.mark.slow
def test_a_grid_of_one_plugins_parts_loads_and_runs_with_only_that_plugin(write_grid, tmp_path):
    grid = write_grid(distillers="[none]")
    env = dict(os.environ, HARNESS_PLUGINS="movies")
    out = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--grid", str(grid), "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ran 1 cells: 1 ok, 0 failed" in out.stdout


def test_registration_goes_through_pluggy_so_hook_wrappers_see_it(register):
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def harness_register_distillers(self, register):
            seen.append("before")
            result = yield
            seen.append("after")
            return result

    reg = register(Wrapper(), "wrapper")
    assert seen == ["before", "after"]
    assert reg.entries["distiller"]["kd"].plugin == "distill"  # (still stamped per plugin)


def test_lifecycle_hooks_go_through_pluggy_so_hook_wrappers_see_them(register):
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def harness_grid_finished(self, summary, out_dir):
            seen.append(summary["grid"])
            return (yield)

    register(Wrapper(), "wrapper")
    assert plugins.call_lifecycle("harness_grid_finished", summary={"grid": "g"}, out_dir="x") == []
    assert seen == ["g"]


def test_trace_switch_logs_every_hook_call(monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_TRACE_HOOKS", "1")
    plugins.reset_registry()
    try:
        plugins.get_registry()
        plugins.call_lifecycle("harness_grid_finished", summary={"grid": "g"}, out_dir="x")
    finally:
        plugins.reset_registry()
    err = capsys.readouterr().err
    for hook in ("harness_register_datasets", "harness_register_pruners", "harness_grid_finished"):
        assert f"harness: trace:   {hook} [hook]" in err
    assert "finish harness_grid_finished" in err


def test_lifecycle_hook_errors_do_not_propagate(register):
    seen = []

    class Logger:
        @hookimpl
        def harness_cell_finished(self, record, grid_name):
            seen.append((record["id"], grid_name))

    class Broken:
        @hookimpl
        def harness_cell_finished(self, record, grid_name):
            raise ValueError("tracker offline")

    register(Logger(), "logger")
    register(Broken(), "broken")
    errors = plugins.call_lifecycle("harness_cell_finished", record={"id": "abc"}, grid_name="g")
    assert seen == [("abc", "g")]
    assert errors == ["plugin 'broken' harness_cell_finished: ValueError: tracker offline"]


# --------------------------------------------------------------------------- third party

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def example_plugin_code() -> str:
    """The complete example of docs/plugins.md: the code a plugin author copies."""
    text = DOCS.read_text()
    section = text.split("## A complete example", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def make_site(root: Path, broken: bool = False) -> Path:
    """A site folder laid out as pip installs a wheel: the package and its dist-info."""
    site = root / "site"
    pkg = site / "harness_teachermatch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        example_plugin_code() if not broken else "raise ImportError('no gpu lib')\n"
    )
    info = site / "harness_teachermatch-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-teachermatch\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text("[harness]\nteachermatch = harness_teachermatch\n")
    (info / "RECORD").write_text("")
    return site


def harness_cmd(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("HARNESS_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_third_party_plugin_installed_as_pip_would(tmp_path):
    site = make_site(tmp_path)
    listed = harness_cmd(["plugins", "--details"], site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("teachermatch"))
    assert "harness-teachermatch 0.3.0" in row and "distiller: teacher-match" in row
    assert "teacher-match: regress on the teacher's predictions" in listed.stdout

    (tmp_path / "grid.yaml").write_text(
        textwrap.dedent("""
        name: third
        datasets: [{name: imdb-movies, features: social}]
        teacher: {model: dcnn, channels: [4, 8], hidden: 8}
        student: {model: dcnn, channels: [2, 4], hidden: 4}
        distillers: [none, {name: teacher-match, weight: 1.0}]
        seeds: [0]
        budget: {epochs: 2, batch_size: 256}
        energy: {inference_min_seconds: 0.0}
    """)
    )
    ran = harness_cmd(["run", "--grid", "grid.yaml"], site, tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    md = (tmp_path / "runs/third/leaderboards/imdb-movies_features=social__rating.md").read_text()
    wide = md.split("## Every column")[1]  # (the table with every column, the meter's among them)
    tm_rows = [line for line in wide.splitlines() if line.startswith("| TM(weight=1.0)")]
    assert len(tm_rows) == 1 and "cpu-estimate" in tm_rows[0]


def test_broken_third_party_plugin_is_one_clear_line(tmp_path):
    site = make_site(tmp_path, broken=True)
    res = harness_cmd(["plugins"], site, tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "harness: error: plugin 'teachermatch' (harness-teachermatch 0.3.0, harness_teachermatch) "
        "failed to load: ImportError: no gpu lib"
    )
