"""`harness new-plugin`: the package it writes registers, runs in a one-cell grid and
passes its own test; a real pip install of it is listed by `harness plugins`."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from harness.cli import main
from harness.scaffold import write_plugin
from harness.testing import KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_registers_runs_one_cell_and_passes_its_own_test(kind, tmp_path, capsys):
    out = tmp_path / "pkg"
    assert main(["new-plugin", f"sc-{kind}", "--kind", kind, "--out", str(out)]) == 0
    pkg = f"harness_sc_{kind}"
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["README.md", f"{pkg}/__init__.py", "pyproject.toml", f"tests/test_{pkg}.py"]
    pyproject = (out / "pyproject.toml").read_text()
    assert 'dependencies = ["compress-harness"]' in pyproject
    assert f'[project.entry-points.harness]\nsc-{kind} = "{pkg}"' in pyproject
    # the package's own test (one cell of a tiny grid through `harness run`) passes
    sys.path.insert(0, str(out))
    try:
        spec = importlib.util.spec_from_file_location(f"_t_{pkg}", out / "tests" / f"test_{pkg}.py")
        test = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(test)
        test.test_one_cell_runs()
    finally:
        sys.path.remove(str(out))
    assert "1 ok, 0 failed" in capsys.readouterr().out


def _ruff() -> list[str]:
    """The command that runs ruff (a dev dependency), or skip the test saying why."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it is in the dev extra: pip install -e '.[dev]')")
    cmd = [sys.executable, "-m", "ruff"]
    try:
        probe = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        pytest.skip(f"ruff cannot be run: {e}")
    if probe.returncode != 0:
        pytest.skip(f"ruff cannot be run: {probe.stderr.strip()[:200]}")
    return cmd


@pytest.mark.parametrize("kind", KINDS)
def test_generated_files_pass_ruff_check_and_format(kind, tmp_path):
    """Every file `new-plugin` writes passes `ruff check` and `ruff format --check` with
    ruff's own defaults (--isolated: no config file read), with the stricter rule set
    the harness uses on itself at ruff's default line length, and with the package's
    own pyproject settings; for a short and a long plugin name (names change lines)."""
    ruff = _ruff()
    for name in ("x", "a-rather-long-name-for-a-plugin-package"):
        out = write_plugin(name, kind, tmp_path / name)
        for args in (
            ["check", "--isolated"],
            ["check", "--isolated", "--select", "E,F,I,W,B,UP"],
            ["check"],
            ["format", "--isolated", "--check"],
            ["format", "--check"],
        ):
            done = subprocess.run(
                [*ruff, *args, "--no-cache", "."], cwd=out, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, (
                f"ruff {' '.join(args)} on {kind} {name}:\n{done.stdout}{done.stderr}"
            )


def test_bad_names_and_folders_are_refused_writing_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["new-plugin", "My_Method", "--kind", "distiller"]) == 2
    assert "lower-case letters and digits" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    assert main(["new-plugin", "ok", "--kind", "distiller", "--out", "full"]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main(["new-plugin", "ok", "--kind", "sorter"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_must_show_new_plugin_pip_install_listed_and_one_cell_grid_ok(tmp_path):
    """Must show: `harness new-plugin mymethod --kind distiller --out DIR`, then a pip
    install of DIR: `harness plugins` lists mymethod, and a one-cell grid with it ends
    ok. (Offline: --no-deps --no-build-isolation, into a target folder put on
    PYTHONPATH, so the test's environment is left as it was.)"""
    pkg = tmp_path / "mymethod"
    assert main(["new-plugin", "mymethod", "--kind", "distiller", "--out", str(pkg)]) == 0
    site = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
         str(site), str(pkg)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("HARNESS_PLUGINS", None)

    def harness(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "harness", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    listed = harness("plugins")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("mymethod"))
    assert "harness-mymethod 0.1.0" in row and "distiller: mymethod" in row
    (tmp_path / "grid.yaml").write_text(
        textwrap.dedent("""
        name: one
        datasets: [{name: imdb-movies, features: numerical}]
        teacher: {model: dcnn, channels: [4, 8], hidden: 8}
        student: {model: dcnn, channels: [2, 4], hidden: 4}
        distillers: [mymethod]
        budget: {epochs: 2, batch_size: 256}
        energy: {inference_min_seconds: 0.0}
    """)
    )
    ran = harness("run", "--grid", "grid.yaml")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "ran 1 cells: 1 ok, 0 failed" in ran.stdout
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(pkg / "tests")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
