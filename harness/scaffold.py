"""`harness new-plugin NAME --kind KIND [--out DIR]`: write a plugin package to start from.

The package (the shape of datasette's and llm's plugin templates) installs with
`pip install -e DIR`, registers through an entry point in the group `harness`, appears
in `harness plugins`, and its own test runs a one-cell grid with it
(`harness.testing.run_one_cell`). Each kind's module is a small working method, not a
stub, to be edited into the author's own:

  distiller  FitNets-style hint: MSE between the student's last features, through a
             learned projection, and the teacher's (docs/plugins.md's worked example)
  pruner     global magnitude pruning of the trained student, then one epoch of
             fine-tuning with the mask fixed (unstructured)
  model      a two-layer perceptron for rating and classification, with its hidden
             layer exposed as features
  dataset    a CSV file: every column but `target` is a numeric feature; a seeded
             80/10/10 split
  meter      wall time × a constant power (`<NAME>_WATTS`, default 100 W), an estimate
"""

from __future__ import annotations

import re
from pathlib import Path

from . import DISTRIBUTION
from .errors import UsageError
from .testing import KINDS

VALID_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "A harness plugin: __KIND__ __NAME__"
requires-python = ">=3.11"
dependencies = ["__HARNESS__"]

[project.optional-dependencies]
test = ["pytest"]

# how harness finds the plugin: an entry point in the group `harness`
[project.entry-points.harness]
__NAME__ = "__PKG__"

[tool.setuptools]
packages = ["__PKG__"]

# ruff's defaults plus import order (I), as the harness's own code; the files as
# written pass `ruff check` and `ruff format --check`
[tool.ruff.lint]
extend-select = ["I"]
"""

README = """\
# __DIST__

A [harness](https://pypi.org/project/__HARNESS__/) plugin: the __KIND__ `__NAME__`.

    pip install -e .            # then `harness plugins` lists __NAME__
    python -m pytest tests      # runs a one-cell grid with it

Name it in a grid as any built-in (see the harness's docs/plugins.md and docs/grid.md).
"""

TEST = """\
\"\"\"The plugin registers and one cell of a tiny grid runs with it.\"\"\"

from harness.testing import run_one_cell

import __PKG__


def test_one_cell_runs():
    record = run_one_cell(
        "__KIND__",
        "__NAME__",
        plugin=__PKG__,__OPTIONS__
    )
    assert record["status"] == "ok", record["reason"]
    assert record["metrics"]["test"]["mae"] > 0
"""

MODULES = {
    "distiller": '''\
"""FitNets-style hints (Romero et al., ICLR 2015), in one stage: the student's last
feature map, through a learned projection, regresses on the teacher's."""

from typing import ClassVar

import torch.nn.functional as F
from harness import hookimpl
from harness.api import Distiller, Param, probe, projection


class __CLASS__(Distiller):
    name = "__NAME__"
    description = "hint: MSE between projected student features and the teacher's"
    tasks = frozenset({"classification", "rating"})
    needs = frozenset({"teacher", "features"})
    params: ClassVar[dict[str, Param]] = {
        "weight": Param(1.0, "weight of the hint term"),
    }

    def setup(self, teacher, student, data, example):
        s, t = probe(student, example), probe(teacher, example)
        self.regressor = projection(s.features[-1], t.features[-1]).to(s.device)
        return self.regressor.parameters()

    def loss(self, step):
        student = self.regressor(step.student_features[-1])
        hint = F.mse_loss(student, step.teacher_features[-1])
        step.log_terms(hint=self.hparams["weight"] * hint)
        return step.task_loss + self.hparams["weight"] * hint


@hookimpl
def harness_register_distillers(register):
    register(__CLASS__)
''',
    "pruner": '''\
"""Global magnitude pruning of the trained student (the smallest weights of every
conv and linear layer, ranked together), then fine-tuning with the mask fixed."""

from typing import ClassVar

from harness import hookimpl
from harness.api import Param, Pruner
from harness.size import count_nonzero, count_parameters
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


class __CLASS__(Pruner):
    name = "__NAME__"
    description = "global magnitude pruning after training, then fine-tuning"
    structure = "unstructured"
    params: ClassVar[dict[str, Param]] = {
        "amount": Param(0.5, "fraction of the weights to remove"),
        "finetune_epochs": Param(1, "epochs of fine-tuning after pruning"),
    }

    def fit(self, fit):
        model = fit.train(fit.student)
        layers = [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]
        amount = self.hparams["amount"]
        prune.global_unstructured(layers, prune.L1Unstructured, amount=amount)
        model = fit.train(model, epochs=self.hparams["finetune_epochs"])
        for module, key in layers:
            prune.remove(module, key)  # the mask becomes the weights' zeros
        fit.log_level(
            removed=self.hparams["amount"],
            params=count_parameters(model),
            nonzero_params=count_nonzero(model),
            val=fit.evaluate(model, "val"),
            winner=True,
        )
        return model


@hookimpl
def harness_register_pruners(register):
    register(__CLASS__)
''',
    "model": '''\
"""A two-layer perceptron on the batch's "x" [B, n_features]; its hidden layer is the
feature feature distillers match."""

from typing import ClassVar

from harness import hookimpl
from harness.api import ModelFactory, Param
from torch import nn


class Perceptron(nn.Module):
    def __init__(self, n_in, hidden, n_out):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_out)
        self.n_out = n_out

    def feature_layers(self):
        return [self.hidden]

    def forward(self, x):
        out = self.head(self.hidden(x.flatten(1).float()))
        return out.squeeze(1) if self.n_out == 1 else out  # [B] ratings, [B, C] logits


class __CLASS__(ModelFactory):
    name = "__NAME__"
    description = "two-layer perceptron (hidden layer exposed as features)"
    tasks = frozenset({"classification", "rating"})
    exposes_features = True
    prunable = frozenset({"unstructured"})
    params: ClassVar[dict[str, Param]] = {"hidden": Param(16, "hidden units")}
    presets: ClassVar[dict[str, dict]] = {
        "teacher": {"hidden": 64},
        "student": {"hidden": 8},
    }

    def build(self, data):
        n_out = data.info["n_classes"] if data.task == "classification" else 1
        return Perceptron(data.info["n_features"], self.hparams["hidden"], n_out)


@hookimpl
def harness_register_models(register):
    register(__CLASS__)
''',
    "dataset": '''\
"""A CSV file for the rating task: every column but `target` is a numeric feature;
rows are split 80/10/10 by a seeded permutation; the target is standardised on the
training rows (the harness scores on the original scale)."""

from pathlib import Path
from typing import ClassVar

import pandas as pd
import torch
from harness import hookimpl
from harness.api import DataBundle, Dataset, Param, TensorSplit
from harness.errors import UsageError


class __CLASS__(Dataset):
    name = "__NAME__"
    description = "a CSV file of numeric features and a target column"
    tasks = frozenset({"rating"})
    params: ClassVar[dict[str, Param]] = {
        "path": Param(None, "the CSV file", type=str),
        "target": Param("y", "the target column"),
        "split_seed": Param(0, "seed of the train/val/test permutation"),
    }

    @classmethod
    def check(cls, params, where):
        if not params["path"] or not Path(params["path"]).is_file():
            raise UsageError(f"{where}.path: no CSV file at {params['path']!r}")

    def location(self):
        return str(self.hparams["path"])

    def load(self, task):
        frame = pd.read_csv(self.hparams["path"])
        target = frame.pop(self.hparams["target"])
        y = torch.tensor(target.to_numpy(), dtype=torch.float32)
        x = torch.tensor(frame.to_numpy(dtype="float32"))
        gen = torch.Generator().manual_seed(self.hparams["split_seed"])
        order = torch.randperm(len(x), generator=gen)
        cut = [int(0.8 * len(x)), int(0.9 * len(x))]
        parts = [order[: cut[0]], order[cut[0] : cut[1]], order[cut[1] :]]
        mean, std = float(y[parts[0]].mean()), float(y[parts[0]].std().clamp_min(1e-8))
        splits = [TensorSplit({"x": x[i], "y": (y[i] - mean) / std}) for i in parts]
        info = {"n_features": x.shape[1], "target_mean": mean, "target_std": std}
        note = f"{self.hparams['path']}, {len(x)} rows"
        return DataBundle(task, *splits, info=info, note=note)


@hookimpl
def harness_register_datasets(register):
    register(__CLASS__)
''',
    "meter": '''\
"""Energy as wall time × a constant power (the environment variable WATTS_VARIABLE
names; default 100 W), e.g. a device's rated power where no counter can be read. An
estimate, and marked so."""

import os
import time

from harness import hookimpl
from harness.api import EnergyMeter, EnergyReading

WATTS_VARIABLE = "__ENV___WATTS"


class __CLASS__(EnergyMeter):
    name = "__NAME__"
    description = "wall time x a constant power (an estimate)"
    # never chosen by `meter: auto` over the built-ins; name it in a grid
    priority = -10
    estimate = True

    def __init__(self, device, **options):
        super().__init__(device)
        self.watts = float(os.environ.get(WATTS_VARIABLE, "100"))

    def begin(self):
        self.t0 = time.perf_counter()

    def end(self):
        seconds = time.perf_counter() - self.t0
        joules = self.watts * seconds
        detail = f"{self.watts:g} W assumed"
        return EnergyReading(joules, seconds, self.name, True, detail)


@hookimpl
def harness_register_energy_meters(register):
    register(__CLASS__)
''',
}


def plugin_files(name: str, kind: str) -> dict[str, str]:
    """The package's files, path -> text, for a plugin `name` of `kind`."""
    if kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not VALID_NAME.fullmatch(name):
        raise UsageError(
            f"new-plugin {name!r}: lower-case letters and digits, words joined by '-' (e.g. my-hint)"
        )
    pkg = "harness_" + name.replace("-", "_")
    cls = "".join(w.capitalize() for w in name.split("-"))
    options = ""
    if kind == "dataset":  # its test writes a small CSV and points the dataset at it
        options = '\n        options={"path": write_csv()},'
    subs = {
        "__DIST__": "harness-" + name,
        "__HARNESS__": DISTRIBUTION,
        "__PKG__": pkg,
        "__CLASS__": cls,
        "__NAME__": name,
        "__KIND__": kind,
        "__ENV__": name.upper().replace("-", "_"),
        "__OPTIONS__": options,
    }
    test = TEST
    if kind == "dataset":
        test = test.replace(
            "from harness.testing import run_one_cell\n\nimport __PKG__\n",
            "import tempfile\n\nimport numpy as np\nfrom harness.testing import run_one_cell\n\n"
            "import __PKG__\n\n\n"
            "def write_csv():\n"
            '    """300 rows: y depends on x0 and x1, plus noise."""\n'
            "    rng = np.random.default_rng(0)\n"
            "    x = rng.normal(size=(300, 4))\n"
            "    y = 3 + 2 * x[:, 0] - x[:, 1] + rng.normal(scale=0.3, size=300)\n"
            '    path = tempfile.mkstemp(suffix=".csv")[1]\n'
            '    header = "x0,x1,x2,x3,y"\n'
            '    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="")\n'
            "    return path\n",
        )
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{pkg}/__init__.py": MODULES[kind],
        f"tests/test_{pkg}.py": test,
    }
    out = {}
    for path, text in files.items():
        for key, value in subs.items():
            text = text.replace(key, value)
        out[path] = text
    return out


def write_plugin(name: str, kind: str, out: str | Path | None = None) -> Path:
    """Write the package into `out` (default: ./harness-NAME); refuses a folder that
    exists and is not empty. Returns the folder."""
    files = plugin_files(name, kind)
    folder = Path(out) if out is not None else Path(f"harness-{name}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"--out {folder}: exists and is not an empty folder; nothing written")
    for path, text in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return folder


__all__ = ["plugin_files", "write_plugin"]
