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


def write_cifar100_format(
    root: Path, train_per_class: int = 3, test_per_class: int = 1, n_classes: int = 100, seed: int = 0
) -> Path:
    """Write a small data set in CIFAR-100's python-pickle layout (not the real images:
    each class is a distinct colour pattern plus noise, so a model can learn it)."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    patterns = rng.integers(0, 256, size=(n_classes, 3, 32, 32))

    def part(per_class: int) -> dict:
        labels = np.repeat(np.arange(n_classes), per_class)
        rng.shuffle(labels)
        noise = rng.integers(-40, 41, size=(len(labels), 3, 32, 32))
        images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
        return {
            b"data": images.reshape(len(labels), 3072),
            b"fine_labels": labels.tolist(),
            b"coarse_labels": (labels // 5).tolist(),
            b"filenames": [],
        }

    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        with open(folder / name, "wb") as f:
            pickle.dump(part(per_class), f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"class{i}".encode() for i in range(n_classes)]}, f)
    return root


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    return write_cifar100_format(tmp_path / "cifar")
