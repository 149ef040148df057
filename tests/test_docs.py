"""The plugin API documentation cannot rot: every hook, with its exact signature, is in
docs/plugins.md; every grid key is in docs/grid.md; the README has its two commands."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from harness import hookspecs
from harness.grid import BUDGET, ENERGY, TOP_KEYS, TRAIN

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [f for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("harness_")]


@pytest.mark.parametrize("hook", HOOKS, ids=lambda f: f.__name__)
def test_every_hook_is_documented_with_its_signature(hook):
    docs = (ROOT / "docs" / "plugins.md").read_text()
    signature = str(inspect.signature(hook)).replace("'", "")
    assert f"### {hook.__name__}\n" in docs
    assert f"def {hook.__name__}{signature}:" in docs
    assert hook.__doc__ and len(hook.__doc__.strip()) > 40


def test_every_grid_key_is_documented():
    docs = (ROOT / "docs" / "grid.md").read_text()
    for key in [*TOP_KEYS, *BUDGET, *TRAIN, *ENERGY]:
        assert f"`{key}`" in docs, key


def test_readme_has_exactly_two_setup_commands_and_ci_runs_them():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```(?:bash|sh)\n(.*?)```", setup, re.S)
    lines = [line for block in commands for line in block.strip().splitlines()]
    assert len(lines) == 2, lines
    install, test = lines
    assert install.startswith("pip install") and "torch==2.13.0" in install
    assert test.startswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci and test in ci


def test_the_distribution_has_a_name_of_its_own_and_plugins_depend_on_it():
    """The package index's `harness` is another project: our distribution is
    compress-harness, and every plugin example depends on that name."""
    import tomllib

    from harness import DISTRIBUTION

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION != "harness"
    assert project["scripts"]["harness"] == "harness.cli:main"
    docs = (ROOT / "docs" / "plugins.md").read_text()
    deps = re.findall(r"^dependencies = (.*)$", docs, re.M)
    assert deps and all(f'"{DISTRIBUTION}' in d and '"harness"' not in d for d in deps), deps
    assert DISTRIBUTION in (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / "docs" / "plugins.md").read_text(), re.S)


def test_every_code_block_of_the_plugin_guide_runs(tmp_path, monkeypatch, capsys):
    """docs/plugins.md cannot rot: each python block executes (the hook signatures as
    stubs, the examples as modules, the testing example's test is called), each TOML
    and YAML block parses, and the `harness new-plugin` command works as written."""
    import tomllib
    import types

    import yaml

    from harness.cli import main

    python = _blocks("python")
    assert len(python) >= 8
    for i, code in enumerate(python):
        module = types.ModuleType(f"_plugins_md_block_{i}")
        exec(
            compile(
                "from collections.abc import Callable\nfrom typing import Any\n" + code,
                module.__name__,
                "exec",
            ),
            module.__dict__,
        )  # noqa: E501
        if "test_one_cell_runs" in module.__dict__:
            module.test_one_cell_runs()
    for text in _blocks("toml"):
        assert tomllib.loads(text)["project"]["dependencies"] == ["compress-harness"]
    for text in _blocks("yaml"):
        assert yaml.safe_load(text)
    monkeypatch.chdir(tmp_path)
    line = next(x for b in _blocks("bash") for x in b.splitlines() if x.startswith("harness new-plugin"))
    assert main(line.split("#")[0].split()[1:]) == 0
    assert (tmp_path / "harness-my-hint" / "pyproject.toml").exists()


def test_the_worked_hint_distiller_is_at_most_30_lines_and_runs_in_a_grid():
    """Must show: the guide's worked distiller is at most 30 lines of Python and runs."""
    import types

    from harness.testing import run_one_cell

    code = next(b for b in _blocks("python") if "class Hint(Distiller)" in b)
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 30, len(lines)
    module = types.ModuleType("harness_docs_hint")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    record = run_one_cell("distiller", "hint", plugin=module)
    assert record["status"] == "ok", record["reason"]
    hint = record["diagnostics"]["terms_last"]["hint"]
    assert hint > 0 and record["method"] == "HINT"
