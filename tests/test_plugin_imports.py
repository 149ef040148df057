"""Plugins are shaped like third-party packages: they import only harness.api,
harness.errors and harness.hookspecs from the core."""

from __future__ import annotations

import ast
from pathlib import Path

ALLOWED = {"harness", "harness.api", "harness.errors", "harness.hookspecs"}
PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def core_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n == "harness" or n.startswith("harness.")}
    return found


def test_plugins_import_only_the_public_core_modules():
    files = sorted(PLUGINS.rglob("*.py"))
    assert files
    bad = {f"{p.relative_to(PLUGINS)}: {m}" for p in files for m in core_imports(p) - ALLOWED}
    assert not bad, sorted(bad)
