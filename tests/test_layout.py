"""The layout the project keeps (docs/architecture.md): short functions in the core,
plugins that use only the plugin API, nothing generated tracked, papers named by
their authors, title and venue, and an architecture page that names every module."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"
MAX_LINES = 80


def _functions(path: Path) -> list[tuple[str, int]]:
    """(name, length in lines) of every function and method in a file."""
    return [
        (f"{node.name} (line {node.lineno})", node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def _long_functions(paths: list[Path]) -> list[str]:
    found = [(p, name, n) for p in paths for name, n in _functions(p)]
    return [f"{p.relative_to(ROOT)}: {name}, {n} lines" for p, name, n in found if n > MAX_LINES]


def _core_modules() -> list[Path]:
    return sorted(HARNESS.rglob("*.py"))


def test_the_length_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    p = tmp_path / "m.py"
    p.write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert [n for _name, n in _functions(p)] == [MAX_LINES + 1, 2]
    assert len(_long_functions_at(p)) == 1


def _long_functions_at(p: Path) -> list[str]:
    return [name for name, n in _functions(p) if n > MAX_LINES]


def test_no_function_in_the_core_is_over_80_lines():
    assert _long_functions(_core_modules()) == []


# That plugins import only harness.api, harness.errors and harness.hookspecs is
# tests/test_plugin_imports.py's.


def _git_files() -> list[str] | None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.splitlines() if out.returncode == 0 else None


def test_nothing_generated_is_tracked():
    files = _git_files()
    if files is None:
        pytest.skip("not a git checkout")
    generated = [
        f
        for f in files
        if f.startswith(("log_tensorboard/", "log/", "saved/", "runs/"))
        or f.endswith((".db", ".db-journal", ".pt.tmp"))
    ]
    assert generated == []


def test_gitignore_covers_run_output():
    ignored = (ROOT / ".gitignore").read_text().split()
    for pattern in ("log_tensorboard/", "*.db", "/runs/"):
        assert pattern in ignored, pattern


WRITTEN = ["harness", "plugins", "docs", "grids", "README.md", "leaderboards/README.md"]
#: a private index of papers ("seed 000", "the seed paper") or a path outside the repository
UNNAMED = re.compile(r"seed 00\d|the seed (paper|code)|\.\./shared", re.I)


def test_papers_are_named_not_numbered_and_no_doc_points_outside_the_repository():
    bad = []
    for top in WRITTEN:
        base = ROOT / top
        for p in [base] if base.is_file() else sorted(base.rglob("*")):
            if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".yml", ".txt", ".toml"):
                for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                    if UNNAMED.search(line):
                        bad.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()[:80]}")
    assert bad == []


def test_architecture_names_every_module_of_the_core():
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for p in _core_modules():
        rel = p.relative_to(HARNESS).as_posix()
        if p.name == "__init__.py" and p.parent != HARNESS:
            rel = p.parent.relative_to(HARNESS).as_posix() + "/"  # a package: its folder
        if rel not in text:
            missing.append(rel)
    assert missing == []


def test_readme_links_the_architecture():
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()


RECSYS_GRID = """
datasets: [{name: movielens-100k, task: ranking}]
teacher: {model: bpr, embedding_size: 4}
student: {model: bpr, embedding_size: 2}
distillers: [none]
budget: {epochs: 1, teacher_epochs: 1, batch_size: 4096, eval_batch_size: 1024}
energy: {inference_min_seconds: 0.0}
"""


@pytest.mark.slow
def test_a_recsys_run_writes_nothing_outside_its_output_folder(tmp_path):
    """RecBole (its Config, dataset loading and models) is used by the recsys plugin;
    a run from an empty folder leaves that folder empty but for --out."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    grid = tmp_path / "g.yaml"
    grid.write_text(textwrap.dedent(RECSYS_GRID))
    env = dict(os.environ)
    env.pop("HARNESS_PLUGINS", None)
    out = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--grid", str(grid), "--out", "out"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["out"]
