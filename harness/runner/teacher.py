"""Stage 2, get teacher: the trained teacher of a dataset/teacher/seed, from the disk
cache or trained now (under a file lock, so parallel workers train it once) and cached
with its metrics, size, energy, history and per-example test outcomes. A damaged cache
is set aside and the teacher retrained."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch import nn

from ..api import DataBundle
from ..energy import Window, open_meter
from ..envinfo import environment
from ..grid import dataset_label, model_label
from ..size import measure_size
from ..spec import CellSpec, canonical, unhashed
from ..tasks import Task, get_task
from .data import load_data
from .measure import MeterFactory, energy_of, meter_maker
from .models import build_model
from .options import RunOptions, worker_name
from .train import train_model


def teacher_key(spec: CellSpec) -> str:
    """The teacher cache's key: what the teacher's training depends on, and nothing of
    the student's. (`compile` is left out: it compiles a distiller's loss, and a
    teacher trains without one; options added later are left out at their default, so
    that caches written before them are found.)"""
    train = {
        k: v
        for k, v in spec.to_config()["teacher_train"].items()
        if k != "compile" and not unhashed("teacher_train", k, v)
    }
    key = {
        "dataset": {"name": spec.dataset.name, "params": spec.dataset.params},
        "task": spec.task,
        "teacher": {"model": spec.teacher.model, "params": spec.teacher.params},
        "seed": spec.seed,
        "epochs": spec.budget.teacher_epochs,
        "batch_size": spec.budget.batch_size,
        "train": train,
    }
    return hashlib.sha256(canonical(key).encode()).hexdigest()[:16]


def get_teacher(
    spec: CellSpec, data: DataBundle, task: Task, device: str, opts: RunOptions, meter_factory: MeterFactory
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained teacher of this dataset/teacher/seed: from the disk cache, or trained
    now (under a file lock, so parallel workers train it once) and cached."""
    key = teacher_key(spec)
    folder = Path(opts.teacher_dir)
    folder.mkdir(parents=True, exist_ok=True)
    weights, meta_path = folder / f"{key}.pt", folder / f"{key}.json"
    outcomes_path = folder / f"{key}.outcomes.npz"
    model = build_model(spec.teacher, data, spec.seed, device)
    with FileLock(str(folder / f"{key}.lock")):
        if weights.exists() and meta_path.exists():
            try:
                meta = _load_cached_teacher(model, weights, meta_path, device)
                if outcomes_path.exists():  # (absent in caches written before outcomes were kept)
                    with np.load(outcomes_path, allow_pickle=False) as z:
                        meta["outcomes"] = {"test": {k: z[k] for k in z.files}}
                return model.eval(), meta
            except Exception as e:  # a damaged cache heals: set aside, train again
                moved = _set_aside(weights, meta_path)
                print(
                    f"harness: warning: teacher cache {weights} could not be loaded "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                    f"moved aside to {', '.join(map(str, moved))}; retraining the teacher",
                    file=sys.stderr,
                    flush=True,
                )
                model = build_model(spec.teacher, data, spec.seed, device)
        model, meta = _train_teacher(spec, model, data, task, device, opts, meter_factory)
        meta["key"] = key
        _write_cache(
            folder, key, model, meta, task.outcomes(model, data.test, data, spec.budget.eval_batch_size)
        )
        return model.eval(), meta


def _train_teacher(
    spec: CellSpec,
    model: nn.Module,
    data: DataBundle,
    task: Task,
    device: str,
    opts: RunOptions,
    meter_factory: MeterFactory,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the teacher now, in its own energy window; returns it and its record."""
    budget = spec.budget
    gen = torch.Generator().manual_seed(spec.seed)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    with open_meter(meter_factory) as meter, Window(meter) as w:
        model = train_model(
            model,
            data,
            task,
            spec.teacher_train,
            budget.teacher_epochs,
            budget.batch_size,
            gen,
            history=history,
            select=budget.select,
            eval_batch_size=budget.eval_batch_size,
            desc=f"teacher {model_label(spec.to_config()['teacher'])}",
            progress=opts.progress,
        )
    train_s = time.perf_counter() - t0
    eb = budget.eval_batch_size
    metrics = {
        "test": task.evaluate(model, data.test, data, eb),
        "val": task.evaluate(model, data.val, data, eb),
    }
    config = spec.to_config()
    meta = {
        "key": None,
        "dataset": dataset_label(config["dataset"]),
        "task": spec.task,
        "teacher": model_label(config["teacher"]),
        "seed": spec.seed,
        "metrics": metrics,
        "size": measure_size(model, lambda: task.forward(model, data.prepare(data.test.head(1)))),
        "energy": energy_of(w.reading),
        "times": {"train_s": train_s},
        "history": history,
        "env": environment(device),
    }
    return model, meta


def _write_cache(folder: Path, key: str, model: nn.Module, meta: dict[str, Any], outcomes: dict) -> None:
    """Write the teacher's outcomes, weights (with their checksum in the meta) and meta,
    each atomically; the meta last, so a cache with a meta is complete."""
    outcomes_path = folder / f"{key}.outcomes.npz"
    tmp_out = folder / f"{key}.outcomes.tmp.npz"
    np.savez_compressed(tmp_out, **outcomes)
    os.replace(tmp_out, outcomes_path)
    weights, meta_path = folder / f"{key}.pt", folder / f"{key}.json"
    tmp = weights.with_suffix(".pt.tmp")
    torch.save(model.state_dict(), tmp)
    meta["weights_sha256"] = _sha256(tmp)  # checked before every load
    os.replace(tmp, weights)
    tmp_meta = meta_path.with_suffix(".json.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, meta_path)
    meta["cached"] = False
    meta["outcomes"] = {"test": outcomes}  # (to the store's outcomes table, not its JSON)


def prepare_teacher(spec: CellSpec, opts: RunOptions) -> dict[str, Any]:
    """Train (or find cached) the teacher a cell needs, ahead of its cells: the teacher
    task of a distributed run. Returns the teacher's record (its "cached" says whether it
    was trained now) with the worker that ran it; never raises: on failure, {"key",
    "error"} (the cells then meet the same error, and record it, when they ask for it)."""
    try:
        data = load_data(spec, opts.device)
        task = get_task(spec.task)
        _model, meta = get_teacher(spec, data, task, opts.device, opts, meter_maker(spec, opts.device))
    except Exception as e:
        return {"key": teacher_key(spec), "error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
    finally:
        gc.collect()
        if opts.device.startswith("cuda"):
            torch.cuda.empty_cache()
    meta["worker"] = worker_name()
    return meta


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_cached_teacher(model: nn.Module, weights: Path, meta_path: Path, device: str) -> dict[str, Any]:
    """Load a cached teacher into `model`; raises when the cache is damaged: unreadable
    meta, weights whose checksum differs from the one the meta recorded (a partial or
    altered write), or weights torch cannot load into this architecture."""
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path} does not hold a teacher record")
    want = meta.get("weights_sha256")  # (absent in caches written before checksums)
    if want is not None and _sha256(weights) != want:
        raise ValueError(f"{weights} does not match the checksum in {meta_path.name}")
    model.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    meta["cached"] = True
    return meta


def _set_aside(*paths: Path) -> list[Path]:
    """Rename damaged cache files to NAME.bad-<time> (kept for inspection, never read)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for p in paths:
        if p.exists():
            target = p.with_name(f"{p.name}.bad-{stamp}")
            os.replace(p, target)
            moved.append(target)
    return moved
