"""Running one cell: data (cached per process), teacher (trained once, cached on disk),
student, the pruner's schedule around training with the distiller's loss, evaluation,
size and energy. `run_cell` never raises: a failure becomes a record with status
"failed" and its error, so one cell never takes the grid down.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import json
import os
import random
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch import nn
from tqdm import tqdm

from .api import DataBundle, Distiller, Step
from .energy import Window, select_meter
from .envinfo import environment
from .errors import CellError, UsageError
from .grid import canonical, dataset_label, model_label
from .memory import PeakMemory
from .plugins import get_registry
from .size import count_parameters, measure_size
from .tasks import Task, get_task


@dataclass
class RunOptions:
    device: str = "cpu"
    teacher_dir: str = "teachers"
    progress: bool = False


def resolve_device(choice: str, here: bool = True) -> str:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when present, else CPU). here=False: the
    cells run on other machines (a Dask cluster), so cuda is not checked on this one."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return "cpu"
    if choice.startswith("cuda"):
        if here and not torch.cuda.is_available():
            raise UsageError(
                f"--device {choice}: CUDA is not available on this machine (use --device cpu or auto)"
            )
        return choice
    raise UsageError(f"--device {choice!r}: expected cpu, cuda or auto")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- data


_DATA: dict[str, DataBundle] = {}


def load_data(config: dict[str, Any], device: str) -> DataBundle:
    """The cell's data, loaded once per process and kept on the device."""
    ds = config["dataset"]
    key = canonical({"dataset": ds["name"], "params": ds["params"], "task": config["task"], "device": device})
    if key not in _DATA:
        if len(_DATA) >= 4:  # bound memory on grids with many datasets
            _DATA.pop(next(iter(_DATA)))
        cls = get_registry().get("dataset", ds["name"])
        bundle = cls(**ds["params"]).load(config["task"])
        if bundle.task != config["task"]:
            raise CellError(
                f"dataset {ds['name']!r} returned task {bundle.task!r}, asked for {config['task']!r}"
            )
        _DATA[key] = bundle.to(device)
    return _DATA[key]


# --------------------------------------------------------------------------- training


def copy_model(model: nn.Module) -> nn.Module:
    """copy.deepcopy that also works on models whose modules hold computed tensors as
    attributes (torch.nn.utils.prune's masked `weight`, weight_norm): those are detached
    first; the modules' forward pre-hooks recompute them on the next pass."""
    for mod in model.modules():
        for key, value in list(vars(mod).items()):
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                setattr(mod, key, value.detach())
    clone = copy.deepcopy(model)
    for mod in clone.modules():
        for key, hook in list(mod._forward_hooks.items()):
            if isinstance(hook, _TapHook):
                del mod._forward_hooks[key]
    return clone


class _TapHook:
    """The forward hook of a FeatureTap. Copies of a model share it (deepcopy returns it
    as is) and `copy_model` removes it from them, so a copy never feeds the tap."""

    def __init__(self, tap: FeatureTap) -> None:
        self.tap = tap

    def __call__(self, _module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        if self.tap.on:
            self.tap.outputs.append(out)

    def __deepcopy__(self, memo: dict) -> _TapHook:
        return self


class FeatureTap:
    """Captures the outputs of a model's `feature_layers()` with forward hooks, during
    the training forward passes only (`record()`), never during evaluation."""

    def __init__(self, model: nn.Module) -> None:
        layers = model.feature_layers() if hasattr(model, "feature_layers") else []
        if not layers:
            raise CellError(f"{type(model).__name__} exposes no feature layers")
        self.on = False
        self.outputs: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(_TapHook(self)) for m in layers]

    @contextlib.contextmanager
    def record(self) -> Iterator[None]:
        self.outputs, self.on = [], True
        try:
            yield
        finally:
            self.on = False

    def take(self) -> list[torch.Tensor]:
        out, self.outputs = self.outputs, []
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def make_optimizer(params: list[nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg["lr"],
            momentum=cfg["momentum"],
            weight_decay=cfg["weight_decay"],
            nesterov=cfg["nesterov"],
        )
    if cfg["optimizer"] == "adagrad":  # (the CD paper's CDAE)
        return torch.optim.Adagrad(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def lr_at(cfg: dict[str, Any], epoch: int) -> float:
    """Step schedule: lr × gamma for every milestone already reached (epochs from 0)."""
    return cfg["lr"] * cfg["gamma"] ** sum(1 for m in cfg["milestones"] if epoch >= m)


def train_model(
    model: nn.Module,
    data: DataBundle,
    task: Task,
    cfg: dict[str, Any],
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    distiller: Distiller | None = None,
    teacher: nn.Module | None = None,
    extra_params: list[nn.Parameter] | None = None,
    on_epoch_end: Callable[[nn.Module, int], nn.Module | None] | None = None,
    history: list[dict[str, float]] | None = None,
    desc: str = "",
    progress: bool = False,
    select: str = "last",
    eval_batch_size: int = 1024,
    start_epoch: int = 0,
) -> nn.Module:
    """Train `model` for `epochs`; with a distiller, its loss replaces the task loss.

    select: "last" returns the model after the last epoch; "best_val" scores the
    validation split after every epoch and returns the best epoch's model (early
    stopping by model selection; the budget is still spent in full).
    start_epoch: where the learning-rate schedule starts (e.g. a later round of a
    pruning schedule that continues one schedule across rounds).
    Raises CellError when the loss becomes NaN or infinite.
    """
    needs = distiller.needs if distiller is not None else frozenset()
    want_features = "features" in needs
    # the teacher's outputs are computed per batch for distillers that compare outputs
    # or features; others (ranking) query the teacher themselves through Step.teacher
    use_teacher = teacher is not None and bool(needs & {"logits", "features"})
    extra = list(extra_params or [])
    if teacher is not None:
        teacher.eval()
    split = task.train_split(model)

    def taps(m: nn.Module) -> FeatureTap | None:
        return FeatureTap(m) if want_features else None

    s_tap, t_tap = taps(model), (taps(teacher) if use_teacher else None)
    device = next(model.parameters()).device
    # augmentation draws from its own generator on the data's device, seeded from the
    # shuffling generator, so a cell is reproducible on CPU and on CUDA alike
    aug = torch.Generator(device=device)
    aug.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    opt = make_optimizer(list(model.parameters()) + extra, cfg)
    metric = next(m for m in task.metrics if m.name == task.primary)
    best: tuple[float, nn.Module] | None = None
    bar = tqdm(range(epochs), desc=desc, leave=False, disable=not progress, unit="epoch")
    try:
        for epoch in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, start_epoch + epoch)
            model.train()
            total = torch.zeros((), device=next(model.parameters()).device)
            steps = 0
            logged = _EpochLog()
            batches = data.batches(split, batch_size, train=True, generator=generator, aug_generator=aug)
            for batch in batches:
                with s_tap.record() if s_tap else contextlib.nullcontext():
                    out, task_loss = task.train_step(model, batch)
                if distiller is None:
                    loss = task_loss
                else:
                    t_out, t_feats = None, None
                    if use_teacher:
                        with torch.no_grad(), t_tap.record() if t_tap else contextlib.nullcontext():
                            t_out = task.forward(teacher, batch)
                        t_feats = t_tap.take() if t_tap else None
                    step = Step(
                        batch=batch,
                        task=task.name,
                        student_out=out,
                        task_loss=task_loss,
                        teacher_out=t_out,
                        teacher_features=t_feats,
                        student_features=s_tap.take() if s_tap else None,
                        epoch=epoch,
                        student=model,
                        teacher=teacher,
                        epochs=epochs,
                    )
                    loss = distiller.loss(step)
                    logged.add(step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg["grad_clip"]:
                    nn.utils.clip_grad_norm_(list(model.parameters()) + extra, cfg["grad_clip"])
                opt.step()
                total += loss.detach()
                steps += 1
            mean_loss = float(total) / max(steps, 1)  # one sync per epoch
            if not np.isfinite(mean_loss):
                raise CellError(f"loss became {mean_loss} in epoch {epoch + 1}")
            entry = {"epoch": epoch + 1, "loss": mean_loss, **logged.means()}
            if select == "best_val":
                score = task.evaluate(model, data.val, data, eval_batch_size)[metric.name]
                entry[f"val_{metric.name}"] = score
                signed = score if metric.lower_is_better else -score
                if best is None or signed < best[0]:
                    best = (signed, copy_model(model))  # (copies carry no feature tap)
            if history is not None:
                history.append(entry)
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            if on_epoch_end is not None:
                replaced = on_epoch_end(model, epoch)
                if replaced is not None and replaced is not model:
                    model = replaced
                    if s_tap:
                        s_tap.close()
                        s_tap = taps(model)
                    opt = make_optimizer(list(model.parameters()) + extra, cfg)
    finally:
        bar.close()
        for tap in (s_tap, t_tap):
            if tap:
                tap.close()
    return best[1] if best is not None else model


class _EpochLog:
    """Sums of the terms and stats distillers log per step (`Step.log_terms`,
    `Step.log_stats`), kept on the device and read once per epoch."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, torch.Tensor]] = {"terms": {}, "stats": {}}
        self.steps = 0

    def add(self, step: Step) -> None:
        terms = dict(step.terms)
        if terms:
            terms.setdefault("task", step.task_loss)
        for kind, values in (("terms", terms), ("stats", step.stats)):
            sums = self.sums[kind]
            for key, value in values.items():
                v = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
                sums[key] = sums[key] + v if key in sums else v
        self.steps += 1

    def means(self) -> dict[str, dict[str, float]]:
        return {
            kind: {k: float(v) / self.steps for k, v in sums.items()}
            for kind, sums in self.sums.items()
            if sums
        }


def loss_diagnostics(history: list[dict[str, Any]], note: str = "") -> dict[str, Any] | None:
    """From a training history: the logged loss terms of the first and last epoch, the
    ratio of the distillation terms (all but `task`) to the task term in each, and the
    mean over epochs of every logged stat, and the distiller's `diagnostics_note`. None
    when the distiller logged nothing."""
    logged = [e for e in history if e.get("terms")]
    if not logged:
        return None

    def ratio(terms: dict[str, float]) -> float | None:
        task = abs(terms.get("task", 0.0))
        other = sum(abs(v) for k, v in terms.items() if k != "task")
        return other / task if task > 0 else None

    first, last = logged[0]["terms"], logged[-1]["terms"]
    stats: dict[str, list[float]] = {}
    for e in history:
        for k, v in e.get("stats", {}).items():
            stats.setdefault(k, []).append(v)
    return {
        "terms_first": first,
        "terms_last": last,
        "ratio_first": ratio(first),
        "ratio_last": ratio(last),
        "stats": {k: float(np.mean(v)) for k, v in stats.items()},
        "note": note,
    }


# --------------------------------------------------------------------------- teacher


def teacher_key(config: dict[str, Any]) -> str:
    spec = {
        "dataset": {k: config["dataset"][k] for k in ("name", "params")},
        "task": config["task"],
        "teacher": {k: config["teacher"][k] for k in ("model", "params")},
        "seed": config["seed"],
        "epochs": config["budget"]["teacher_epochs"],
        "batch_size": config["budget"]["batch_size"],
        "train": config["teacher_train"],
    }
    return hashlib.sha256(canonical(spec).encode()).hexdigest()[:16]


def build_model(role_spec: dict[str, Any], data: DataBundle, seed: int, device: str) -> nn.Module:
    cls = get_registry().get("model", role_spec["model"])
    seed_everything(seed)
    return cls(**role_spec["params"]).build(data).to(device)


def get_teacher(
    config: dict[str, Any],
    data: DataBundle,
    task: Task,
    device: str,
    opts: RunOptions,
    meter_factory: Callable[[], Any],
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained teacher of this dataset/teacher/seed: from the disk cache, or trained
    now (under a file lock, so parallel workers train it once) and cached."""
    key = teacher_key(config)
    folder = Path(opts.teacher_dir)
    folder.mkdir(parents=True, exist_ok=True)
    weights, meta_path = folder / f"{key}.pt", folder / f"{key}.json"
    outcomes_path = folder / f"{key}.outcomes.npz"
    model = build_model(config["teacher"], data, config["seed"], device)
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
                model = build_model(config["teacher"], data, config["seed"], device)
        budget = config["budget"]
        gen = torch.Generator().manual_seed(config["seed"])
        meter = meter_factory()
        history: list[dict[str, float]] = []
        t0 = time.perf_counter()
        with Window(meter) as w:
            model = train_model(
                model,
                data,
                task,
                config["teacher_train"],
                budget["teacher_epochs"],
                budget["batch_size"],
                gen,
                history=history,
                select=budget["select"],
                eval_batch_size=budget["eval_batch_size"],
                desc=f"teacher {model_label(config['teacher'])}",
                progress=opts.progress,
            )
        train_s = time.perf_counter() - t0
        metrics = {
            "test": task.evaluate(model, data.test, data, budget["eval_batch_size"]),
            "val": task.evaluate(model, data.val, data, budget["eval_batch_size"]),
        }
        meta = {
            "key": key,
            "dataset": dataset_label(config["dataset"]),
            "task": config["task"],
            "teacher": model_label(config["teacher"]),
            "seed": config["seed"],
            "metrics": metrics,
            "size": measure_size(model, lambda: task.forward(model, data.prepare(data.test.head(1)))),
            "energy": {
                "train_j": w.reading.joules,
                "meter": w.reading.meter,
                "estimate": w.reading.estimate,
                "quality": w.reading.quality,
                "detail": w.reading.detail,
            },
            "times": {"train_s": train_s},
            "history": history,
            "env": environment(device),
        }
        outcomes = task.outcomes(model, data.test, data, budget["eval_batch_size"])
        tmp_out = folder / f"{key}.outcomes.tmp.npz"
        np.savez_compressed(tmp_out, **outcomes)
        os.replace(tmp_out, outcomes_path)
        tmp = weights.with_suffix(".pt.tmp")
        torch.save(model.state_dict(), tmp)
        meta["weights_sha256"] = _sha256(tmp)  # checked before every load
        os.replace(tmp, weights)
        tmp_meta = meta_path.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_meta, meta_path)
        meta["cached"] = False
        meta["outcomes"] = {"test": outcomes}  # (to the store's outcomes table, not its JSON)
        return model.eval(), meta


def meter_maker(config: dict[str, Any], device: str) -> Callable[[], Any]:
    """A maker of the cell's energy meter (its grid's `energy` settings): each call a new
    meter, for the teacher's and the student's own windows."""
    energy_cfg = config["energy"]
    meter_opts = {"cpu_watts_per_core": energy_cfg["cpu_watts_per_core"]}
    return lambda: select_meter(get_registry(), torch.device(device), energy_cfg["meter"], meter_opts)


def prepare_teacher(config: dict[str, Any], opts: RunOptions) -> dict[str, Any]:
    """Train (or find cached) the teacher a cell needs, ahead of its cells: the teacher
    task of a distributed run. Returns the teacher's record (its "cached" says whether it
    was trained now) with the worker that ran it; never raises: on failure, {"key",
    "error"} (the cells then meet the same error, and record it, when they ask for it)."""
    try:
        data = load_data(config, opts.device)
        task = get_task(config["task"])
        _model, meta = get_teacher(config, data, task, opts.device, opts, meter_maker(config, opts.device))
    except Exception as e:
        return {"key": teacher_key(config), "error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
    finally:
        gc.collect()
        if opts.device.startswith("cuda"):
            torch.cuda.empty_cache()
    meta["worker"] = worker_name()
    return meta


def worker_name() -> str:
    """Who runs a cell: "host:pid" of this process (a record's "worker")."""
    return f"{socket.gethostname()}:{os.getpid()}"


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


# --------------------------------------------------------------------------- the cell


class CellFit:
    """The `harness.api.Fit` a pruner drives."""

    def __init__(
        self,
        student: nn.Module,
        config: dict[str, Any],
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
        self.epochs = config["budget"]["epochs"]
        self.config, self.data, self.task = config, data, task
        self.distiller, self.teacher, self.extra = distiller, teacher, extra
        self.generator = generator
        self.progress = progress
        self.history: list[dict[str, float]] = []
        self.levels: list[dict[str, Any]] = []
        self.example = example
        metric = next(m for m in task.metrics if m.name == task.primary)
        self.primary = (metric.name, metric.lower_is_better)

    def train(self, model, epochs=None, distill=True, on_epoch_end=None, select=None, start_epoch=0):
        return train_model(
            model,
            self.data,
            self.task,
            self.config["train"],
            self.epochs if epochs is None else epochs,
            self.config["budget"]["batch_size"],
            self.generator,
            distiller=self.distiller if distill else None,
            teacher=self.teacher if distill else None,
            extra_params=self.extra if distill else None,
            on_epoch_end=on_epoch_end,
            history=self.history,
            desc=self.config["distiller"]["name"],
            progress=self.progress,
            select=select or self.config["budget"]["select"],
            eval_batch_size=self.config["budget"]["eval_batch_size"],
            start_epoch=start_epoch,
        )

    def evaluate(self, model, split="val"):
        if split not in ("val", "test", "train"):
            raise ValueError(f"unknown split {split!r}")
        return self.task.evaluate(
            model, getattr(self.data, split), self.data, self.config["budget"]["eval_batch_size"]
        )

    def log_level(self, **values):
        self.levels.append(values)


def method_label(config: dict[str, Any]) -> str:
    """The leaderboard's name for a cell, joined as the papers do: SP-SAD, LTH-KD, ...;
    the plain student is named by its model (DCNN)."""
    reg = get_registry()
    parts = []
    for kind, key in (("pruner", "pruner"), ("distiller", "distiller")):
        name = config[key]["name"]
        if name != "none":
            cls = reg.get(kind, name)
            label = cls.display()
            shown = config[key].get("shown") or []
            if shown:
                label += "(" + ",".join(f"{k}={config[key]['params'][k]}" for k in shown) + ")"
            parts.append(label)
    if not parts:
        return reg.get("model", config["student"]["model"]).display()
    return "-".join(parts)


def base_record(config: dict[str, Any], cell_id: str, grid: str) -> dict[str, Any]:
    return {
        "id": cell_id,
        "grid": grid,
        "status": "running",
        "reason": None,
        "dataset": dataset_label(config["dataset"]),
        "task": config["task"],
        "teacher": model_label(config["teacher"]),
        "student": model_label(config["student"]),
        "distiller": config["distiller"]["name"],
        "pruner": config["pruner"]["name"],
        "seed": config["seed"],
        "config": config,
    }


#: the most inference passes one window makes (it ends at `min_seconds` long before,
#: unless a pass takes microseconds)
MAX_INFERENCE_PASSES = 100_000


def _load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # (not on every platform)
        return None


def _inference_energy(
    model: nn.Module, data: DataBundle, task: Task, meter: Any, batch_size: int, min_seconds: float
) -> dict[str, Any]:
    """Energy and latency of inference over the test split, repeated until the window
    lasts at least `min_seconds` (short windows read 0 on coarse counters, and a CPU-time
    estimate is off by up to a 10 ms clock tick at each end). Returns the figures per
    pass and per sample, the passes, the window's length and the machine's 1-minute
    load average at its end (a busy machine makes the estimate noisy: docs/leaderboards.md)."""
    model.eval()
    passes = 0
    n = len(data.test)
    with torch.no_grad(), Window(meter) as w:
        t0 = time.perf_counter()
        while True:
            for batch in data.batches("test", batch_size):
                task.forward(model, batch)
            passes += 1
            if passes >= MAX_INFERENCE_PASSES or time.perf_counter() - t0 >= min_seconds:
                break
    r = w.reading
    samples = passes * n
    unmeasured = r.joules is None  # (never published as 0)
    return {
        "inference_j": None if unmeasured else r.joules / passes,  # one pass over the test split
        "inference_j_per_1k": None if unmeasured else 1000.0 * r.joules / max(samples, 1),
        "inference_quality": r.quality,
        "inference_passes": passes,
        "inference_window_s": r.seconds,
        "inference_load_1m": _load_1m(),
        "inference_s": r.seconds / passes,
        "latency_ms_per_sample": 1000.0 * r.seconds / max(samples, 1),
    }


#: what of `_inference_energy`'s figures goes into the record's `energy`
INFERENCE_ENERGY_KEYS = (
    "inference_j",
    "inference_j_per_1k",
    "inference_quality",
    "inference_passes",
    "inference_window_s",
    "inference_load_1m",
)


def run_cell(config: dict[str, Any], cell_id: str, grid: str, opts: RunOptions) -> dict[str, Any]:
    """Run one cell and return its record (never raises)."""
    record = base_record(config, cell_id, grid)
    record["worker"] = worker_name()
    record["started"] = time.time()
    t_start = time.perf_counter()
    device = opts.device
    teacher = student = model = None
    memory = PeakMemory(device)  # (harness/memory.py: the peak over this cell alone)
    try:
        memory.start()
        reg = get_registry()
        record["method"] = method_label(config)
        record["env"] = environment(device)
        task = get_task(config["task"])
        meter_factory = meter_maker(config, device)
        data = load_data(config, device)
        record["data_note"] = data.note
        dist_cls = reg.get("distiller", config["distiller"]["name"])
        prune_cls = reg.get("pruner", config["pruner"]["name"])
        distiller = dist_cls(**config["distiller"]["params"])
        pruner = prune_cls(**config["pruner"]["params"])

        teacher_meta = None
        if dist_cls.needs:
            teacher, teacher_meta = get_teacher(config, data, task, device, opts, meter_factory)
            teacher_params = count_parameters(teacher)
        else:  # the size of an untrained teacher of the same architecture, for "% of teacher"
            t = build_model(config["teacher"], data, config["seed"], device)
            teacher_params = count_parameters(t)
            del t
        record["teacher_run"] = teacher_meta

        student = build_model(config["student"], data, config["seed"], device)
        unpruned_params = count_parameters(student)
        seed_everything(config["seed"])
        example = data.prepare(data.train.head(min(len(data.train), config["budget"]["batch_size"])))
        # (a prepared batch: distillers size themselves on it, pruners trace the model)
        extra = list(distiller.setup(teacher, student, data, example))
        for p in extra:
            if p.device != next(student.parameters()).device:
                raise CellError(f"distiller {dist_cls.name!r} returned parameters on {p.device}")
        gen = torch.Generator().manual_seed(config["seed"])
        fit = CellFit(student, config, data, task, distiller, teacher, extra, gen, opts.progress, example)

        meter = meter_factory()
        t0 = time.perf_counter()
        with Window(meter) as w_train:
            model = pruner.fit(fit)
        train_s = time.perf_counter() - t0
        if not isinstance(model, nn.Module):
            raise CellError(f"pruner {prune_cls.name!r} returned {type(model).__name__}, not a model")

        eb = config["budget"]["eval_batch_size"]
        metrics = {
            "test": task.evaluate(model, data.test, data, eb),
            "val": task.evaluate(model, data.val, data, eb),
        }
        # per test example, for paired tests between cells (harness.stats); the store
        # keeps them apart from the record's JSON
        record["outcomes"] = {"test": task.outcomes(model, data.test, data, eb)}
        inf = _inference_energy(model, data, task, meter, eb, config["energy"]["inference_min_seconds"])
        one = data.prepare(data.test.head(1))
        size = measure_size(model, lambda: task.forward(model, one))
        size["teacher_params"] = teacher_params
        size["unpruned_params"] = unpruned_params
        size["pct_of_teacher"] = 100.0 * size["params"] / teacher_params
        size["pct_of_unpruned"] = 100.0 * size["params"] / unpruned_params
        r = w_train.reading
        record.update(
            status="ok",
            metrics=metrics,
            size=size,
            energy={
                "train_j": r.joules,
                "meter": r.meter,
                "estimate": r.estimate,
                "quality": r.quality,
                "detail": r.detail,
                **{k: inf[k] for k in INFERENCE_ENERGY_KEYS},
            },
            times={
                "train_s": train_s,
                "inference_s": inf["inference_s"],
                "latency_ms_per_sample": inf["latency_ms_per_sample"],
            },
            history=fit.history,
            levels=fit.levels,
            diagnostics=loss_diagnostics(fit.history, dist_cls.diagnostics_note),
        )
        meter.close()
    except Exception as e:  # recorded, never raised: the grid goes on
        record["status"] = "failed"
        record["reason"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        record["error"] = traceback.format_exc(limit=20)
        record.setdefault("method", config["distiller"]["name"])
    finally:
        teacher = student = model = None  # release before the next cell
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        record["memory"] = memory.stop()
    record["finished"] = time.time()
    record.setdefault("times", {})["total_s"] = time.perf_counter() - t_start
    return record
