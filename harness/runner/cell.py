"""One cell, in its stages: prepare data, get teacher (cached), build student, train
(the pruner's schedule around training with the distiller's loss), measure (metrics,
size, energy), record. `run_cell` never raises: a failure becomes a record with status
"failed" and its error, so one cell never takes the grid down."""

from __future__ import annotations

import gc
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..api import DataBundle, Distiller, Pruner
from ..energy import Window, open_meter
from ..envinfo import environment
from ..errors import CellError
from ..memory import PeakMemory, release_freed_memory
from ..plugins import get_registry
from ..record import Record
from ..size import count_parameters
from ..spec import CellSpec
from ..tasks import Task, get_task
from .data import load_data
from .measure import INFERENCE_ENERGY_KEYS, MeterFactory, energy_of, measure, meter_maker
from .models import build_model
from .options import RunOptions, seed_everything, worker_name
from .records import method_label, new_record
from .teacher import get_teacher
from .train import loss_diagnostics, train_model


class CellFit:
    """The `harness.api.Fit` a pruner drives: trains the cell's student with its
    distiller, as often and as long as the pruner's schedule asks."""

    def __init__(
        self,
        student: nn.Module,
        spec: CellSpec,
        data: DataBundle,
        task: Task,
        distiller: Distiller,
        teacher: nn.Module | None,
        extra: list[nn.Parameter],
        generator: torch.Generator,
        progress: bool,
        example: dict[str, torch.Tensor],
    ) -> None:
        self.student = student
        self.epochs = spec.budget.epochs
        self.spec, self.data, self.task = spec, data, task
        self.distiller, self.teacher, self.extra = distiller, teacher, extra
        self.generator = generator
        self.progress = progress
        self.history: list[dict[str, float]] = []
        self.levels: list[dict[str, Any]] = []
        self.example = example
        metric = next(m for m in task.metrics if m.name == task.primary)
        self.primary = (metric.name, metric.lower_is_better)

    def train(self, model, epochs=None, distill=True, on_epoch_end=None, select=None, start_epoch=0):
        budget = self.spec.budget
        return train_model(
            model,
            self.data,
            self.task,
            self.spec.train,
            self.epochs if epochs is None else epochs,
            budget.batch_size,
            self.generator,
            distiller=self.distiller if distill else None,
            teacher=self.teacher if distill else None,
            extra_params=self.extra if distill else None,
            on_epoch_end=on_epoch_end,
            history=self.history,
            desc=self.spec.distiller.name,
            progress=self.progress,
            select=select or budget.select,
            eval_batch_size=budget.eval_batch_size,
            start_epoch=start_epoch,
        )

    def evaluate(self, model, split="val"):
        if split not in ("val", "test", "train"):
            raise ValueError(f"unknown split {split!r}")
        return self.task.evaluate(
            model, getattr(self.data, split), self.data, self.spec.budget.eval_batch_size
        )

    def log_level(self, **values):
        self.levels.append(values)


@dataclass
class _Methods:
    """The cell's distiller and pruner, instantiated with its options."""

    distiller: Distiller
    pruner: Pruner
    dist_cls: type[Distiller]
    prune_cls: type[Pruner]


def run_cell(spec: CellSpec, grid: str, opts: RunOptions) -> dict[str, Any]:
    """Run one cell and return its record as a dict (never raises)."""
    record = new_record(spec, grid)
    record.worker = worker_name()
    record.started = time.time()
    t_start = time.perf_counter()
    memory = PeakMemory(opts.device)  # (harness/memory.py: the peak over this cell alone)
    try:
        memory.start()
        record.method = method_label(spec)
        record.env = environment(opts.device)
        _run_stages(spec, opts, record)
    except Exception as e:  # recorded, never raised: the grid goes on
        record.status = "failed"
        record.reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        record.error = traceback.format_exc(limit=20)
        record.method = record.method or spec.distiller.name
    finally:
        gc.collect()  # (the stages' models are released: free them before the next cell)
        release_freed_memory()  # (an idle worker holds its live memory only: memory.py)
        if opts.device.startswith("cuda"):
            torch.cuda.empty_cache()
        record.memory = memory.stop()
    record.finished = time.time()
    record.times = {**(record.times or {}), "total_s": time.perf_counter() - t_start}
    return record.to_dict()


def _run_stages(spec: CellSpec, opts: RunOptions, record: Record) -> None:
    """The stages of a cell in order, filling `record` in; raises on any failure."""
    device = opts.device
    reg = get_registry()
    task = get_task(spec.task)
    meter_factory = meter_maker(spec, device)
    data = load_data(spec, device)  # 1. prepare data
    record.data_note = data.note
    dist_cls = reg.get("distiller", spec.distiller.name)
    prune_cls = reg.get("pruner", spec.pruner.name)
    methods = _Methods(
        dist_cls(**spec.distiller.kwargs()), prune_cls(**spec.pruner.kwargs()), dist_cls, prune_cls
    )
    # 2. get teacher
    teacher, teacher_params = _teacher(spec, data, task, opts, meter_factory, record, dist_cls)
    student = build_model(spec.student, data, spec.seed, device)  # 3. build student
    unpruned_params = count_parameters(student)
    fit = _fit(spec, data, task, methods, teacher, student, opts)
    with open_meter(meter_factory) as meter:
        t0 = time.perf_counter()
        with Window(meter) as w_train:  # 4. train (the pruner drives, the distiller's loss)
            model = methods.pruner.fit(fit)
        train_s = time.perf_counter() - t0
        if not isinstance(model, nn.Module):
            raise CellError(f"pruner {prune_cls.name!r} returned {type(model).__name__}, not a model")
        metrics, outcomes, size, inf = measure(spec, model, data, task, meter)  # 5. measure
    size["teacher_params"] = teacher_params
    size["unpruned_params"] = unpruned_params
    size["pct_of_teacher"] = 100.0 * size["params"] / teacher_params
    size["pct_of_unpruned"] = 100.0 * size["params"] / unpruned_params
    # 6. record
    record.outcomes = outcomes
    record.status = "ok"
    record.metrics = metrics
    record.size = size
    record.energy = {**energy_of(w_train.reading), **{k: inf[k] for k in INFERENCE_ENERGY_KEYS}}
    record.times = {
        "train_s": train_s,
        "inference_s": inf["inference_s"],
        "latency_ms_per_sample": inf["latency_ms_per_sample"],
    }
    record.history = fit.history
    record.levels = fit.levels
    record.diagnostics = loss_diagnostics(fit.history, dist_cls.diagnostics_note)


def _teacher(
    spec: CellSpec,
    data: DataBundle,
    task: Task,
    opts: RunOptions,
    meter_factory: MeterFactory,
    record: Record,
    dist_cls: type[Distiller],
) -> tuple[nn.Module | None, int]:
    """The trained teacher when the distiller needs one (its record goes into the
    cell's), and the teacher's parameter count (of an untrained teacher of the same
    architecture otherwise, for "% of teacher")."""
    teacher, meta = None, None
    if dist_cls.needs:
        teacher, meta = get_teacher(spec, data, task, opts.device, opts, meter_factory)
        params = count_parameters(teacher)
    else:
        params = count_parameters(build_model(spec.teacher, data, spec.seed, opts.device))
    record.teacher_run = meta
    return teacher, params


def _fit(
    spec: CellSpec,
    data: DataBundle,
    task: Task,
    methods: _Methods,
    teacher: nn.Module | None,
    student: nn.Module,
    opts: RunOptions,
) -> CellFit:
    """Set the distiller up on a prepared example batch (distillers size themselves on
    it, pruners trace the model) and the `Fit` the pruner drives."""
    seed_everything(spec.seed)
    example = data.prepare(data.train.head(min(len(data.train), spec.budget.batch_size)))
    extra = list(methods.distiller.setup(teacher, student, data, example))
    for p in extra:
        if p.device != next(student.parameters()).device:
            raise CellError(f"distiller {methods.dist_cls.name!r} returned parameters on {p.device}")
    gen = torch.Generator().manual_seed(spec.seed)
    return CellFit(student, spec, data, task, methods.distiller, teacher, extra, gen, opts.progress, example)
