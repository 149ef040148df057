from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness import plugins

TINY = """
name: {name}
datasets:
  - name: imdb-movies
    features: {features}
teacher: {{model: dcnn, channels: [4, 8], hidden: 8}}
student: {{model: dcnn, channels: [2, 4], hidden: 4}}
distillers: {distillers}
pruners: [none]
seeds: {seeds}
budget: {{epochs: 2, teacher_epochs: 2, batch_size: 256}}
energy: {{inference_min_seconds: 0.0}}
"""


@pytest.fixture
def write_grid(tmp_path: Path):
    """Write a grid file; by default a tiny imdb-movies grid that runs in seconds."""

    def write(
        text: str | None = None,
        name: str = "tiny",
        features: str = "numerical",
        distillers: str = "[none, kd]",
        seeds: str = "[0]",
        filename: str = "grid.yaml",
    ) -> Path:
        body = (
            text
            if text is not None
            else TINY.format(name=name, features=features, distillers=distillers, seeds=seeds)
        )
        p = tmp_path / filename
        p.write_text(textwrap.dedent(body))
        return p

    return write


@pytest.fixture
def register():
    """Register in-code plugins for one test; unregistered afterwards."""
    names = []

    def add(plugin: object, name: str):
        names.append(name)
        return plugins.register_plugin(plugin, name)

    yield add
    for n in names:
        plugins.unregister_plugin(n)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("HARNESS_PLUGINS", raising=False)
    monkeypatch.delenv("HARNESS_CPU_WATTS_PER_CORE", raising=False)
    yield
