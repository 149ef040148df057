"""The types a plugin registers: datasets, models, distillers, pruners, energy meters.

A plugin subclasses one of these, sets its class attributes (name, tasks, params, what
it needs or supports) and hands the class to the `register` callable of the matching
hook (see `harness.hookspecs`). The harness instantiates it with the validated
hyper-parameters of one cell.

Everything here is method-agnostic: the core never names a dataset, model or method.
"""

from __future__ import annotations

import contextlib
import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from .errors import CellError, UsageError, closest
from .paths import data_root as data_root  # (re-exported: where datasets live by default)
from .size import count_nonzero as count_nonzero  # (re-exported for pruners)
from .size import count_parameters as count_parameters

#: The tasks the harness knows how to train and score.
TASKS: tuple[str, ...] = ("classification", "rating", "ranking")

#: What a distiller may need from the cell (see `Distiller.needs`).
NEEDS: tuple[str, ...] = ("teacher", "logits", "features", "scores")

#: The kinds of structure a pruner removes / a model supports.
STRUCTURES: tuple[str, ...] = ("structured", "unstructured")


# --------------------------------------------------------------------------- params


@dataclass(frozen=True)
class Param:
    """One hyper-parameter or option of a registered thing.

    `default` gives the value used when the grid is silent and, unless `type` is given,
    the accepted type (an int is accepted for a float). `choices` restricts the value.
    A default of None with no `type` accepts any YAML value.
    """

    default: Any
    help: str = ""
    type: type | tuple[type, ...] | None = None
    choices: tuple[Any, ...] | None = None

    def accepted(self) -> tuple[type, ...] | None:
        t = self.type if self.type is not None else (None if self.default is None else type(self.default))
        if t is None:
            return None
        types = t if isinstance(t, tuple) else (t,)
        if float in types and int not in types:
            types = (*types, int)
        if tuple in types or list in types:
            types = (*types, list, tuple)
        return types

    def coerce(self, value: Any, where: str) -> Any:
        types = self.accepted()
        if value is None and self.default is None:
            return None
        if types is not None:
            # bool is an int subclass: never accept it for a number, nor a number for bool.
            bad_bool = isinstance(value, bool) != (bool in types)
            if not isinstance(value, types) or (bad_bool and (bool in types or int in types)):
                names = "/".join(sorted({t.__name__ for t in types}))
                raise UsageError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")
            if float in types and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"{where}: expected a finite number, got {value!r}")
            if isinstance(value, tuple):
                value = list(value)
        if self.choices is not None and value not in self.choices:
            raise UsageError(
                f"{where}: {value!r} is not one of {', '.join(map(str, self.choices))}"
                + closest(str(value), map(str, self.choices))
            )
        return value


class Component(ABC):  # noqa: B024  (its subclasses declare the abstract methods)
    """Base of datasets, models, distillers and pruners.

    Class attributes a subclass sets:
      name: the name a grid uses (lower-case, e.g. "kd").
      label: how the leaderboard names it (e.g. "KD"); defaults to name.upper().
      description: one line for `harness plugins`.
      tasks: the tasks it supports (subset of TASKS).
      params: its hyper-parameters / options, name -> Param.
    """

    kind: ClassVar[str] = "component"
    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str]] = frozenset(TASKS)
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, **hparams: Any) -> None:
        self.hparams = hparams

    @classmethod
    def display(cls) -> str:
        return cls.label or cls.name.upper()

    @classmethod
    def resolve_params(cls, given: dict[str, Any], where: str) -> dict[str, Any]:
        """Validate `given` against `params` and fill in defaults (raises UsageError)."""
        unknown = [k for k in given if k not in cls.params]
        if unknown:
            k = unknown[0]
            known = ", ".join(sorted(cls.params)) or "none"
            raise UsageError(
                f"{where}: unknown option {k!r} for {cls.kind} {cls.name!r}"
                + (closest(k, cls.params) or f" (it takes: {known})")
            )
        out = {}
        for key, p in cls.params.items():
            out[key] = p.coerce(given[key], f"{where}.{key}") if key in given else p.default
        cls.check(out, where)
        return out

    @classmethod  # noqa: B027  (optional to override)
    def check(cls, params: dict[str, Any], where: str) -> None:
        """Cross-field or filesystem checks on resolved params; raise UsageError.

        Override to reject, before anything runs, e.g. a path that does not exist.
        """


# --------------------------------------------------------------------------- data


@dataclass
class TensorSplit:
    """One split of a dataset: named tensors sharing their first dimension.

    Batches are taken by indexing whole tensors (no per-sample Python), on whatever
    device the split lives on.
    """

    tensors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        lengths = {k: len(v) for k, v in self.tensors.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"split tensors differ in length: {lengths}")

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values()))) if self.tensors else 0

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def to(self, device: torch.device | str) -> TensorSplit:
        return TensorSplit({k: v.to(device) for k, v in self.tensors.items()})

    def head(self, n: int) -> dict[str, torch.Tensor]:
        return {k: v[:n] for k, v in self.tensors.items()}

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator)
            device = next(iter(self.tensors.values())).device
            order = order.to(device)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                yield {k: v.index_select(0, idx) for k, v in self.tensors.items()}
        else:
            for start in range(0, n, batch_size):
                yield {k: v[start : start + batch_size] for k, v in self.tensors.items()}


@dataclass
class DataBundle:
    """What a dataset gives the harness for one task.

    info: facts models need to size themselves (e.g. "n_features", "n_classes") and the
    rating task needs to score ("target_mean", "target_std": predictions are made on the
    standardised target and scored after undoing it).
    note: one line the leaderboard prints under the dataset's heading (e.g. that the
    data is not the paper's file, or that it is a synthetic stand-in).
    transform: optional `transform(batch, train, generator) -> batch`, applied by the
    harness to every batch on the device before the models see it: augmentation when
    train is True (drawing randomness from `generator`, a generator on the batch's
    device), normalisation always. Teacher and student see the same transformed batch.
    extra: further named splits that travel with the bundle to the device, e.g. the
    ranking task's one row per user ("users") and training histories ("history"). A
    model may train on one of them (its `train_split` attribute, default "train").
    """

    task: str
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    info: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    transform: (
        Callable[[dict[str, torch.Tensor], bool, torch.Generator | None], dict[str, torch.Tensor]] | None
    ) = None
    extra: dict[str, TensorSplit] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> DataBundle:
        return DataBundle(
            self.task,
            self.train.to(device),
            self.val.to(device),
            self.test.to(device),
            self.info,
            self.note,
            self.transform,
            {k: v.to(device) for k, v in self.extra.items()},
        )

    def split(self, name: str) -> TensorSplit:
        """A split by name: "train", "val", "test" or one of `extra`."""
        if name in ("train", "val", "test"):
            return getattr(self, name)
        try:
            return self.extra[name]
        except KeyError:
            known = ", ".join(["train", "val", "test", *self.extra])
            raise KeyError(f"no split {name!r} (the data has: {known})") from None

    def prepare(
        self,
        batch: dict[str, torch.Tensor],
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """The batch as models see it (the dataset's transform, if any)."""
        return batch if self.transform is None else self.transform(batch, train, generator)

    def batches(
        self,
        split: str,
        batch_size: int,
        train: bool = False,
        generator: torch.Generator | None = None,
        aug_generator: torch.Generator | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Prepared batches of a split; shuffled (with `generator`) and augmented (with
        `aug_generator`) when train is True. In training a last batch of one sample is
        dropped (batch normalisation cannot train on it)."""
        for batch in self.split(split).batches(batch_size, shuffle=train, generator=generator):
            if train and len(next(iter(batch.values()))) < 2:
                continue
            yield self.prepare(batch, train, aug_generator)


class Dataset(Component):
    """A dataset. `load` returns the splits for one task.

    The result must depend only on the dataset's params and the task: the harness loads
    it once per process and every cell (every method and seed) shares it. A dataset that
    subsamples takes the subsample's seed as one of its params.
    """

    kind: ClassVar[str] = "dataset"

    @abstractmethod
    def load(self, task: str) -> DataBundle:
        """Return the train/val/test splits for `task` (one of `tasks`)."""

    def location(self) -> str:
        """Where the data is read from (shown by `harness datasets`)."""
        return "shipped with its plugin"

    def missing(self) -> str | None:
        """None when the data is present; else one line saying where it was looked for
        and the command that fixes it. Cells of a dataset that is missing are skipped
        with that line, and the grid's other cells run."""
        return None

    def download(self) -> str:
        """Fetch the data (for `harness datasets download NAME`); return where it went.
        Raise UsageError with one line when it cannot, leaving nothing half-written."""
        raise UsageError(f"dataset {self.name!r} has no download: {self.location()}")


# --------------------------------------------------------------------------- models


class ModelFactory(Component):
    """Builds an `nn.Module` for a task from a dataset's info.

    The module's forward takes the batch's "x" tensor and returns logits [B, C]
    (classification) or predictions [B] (rating, standardised scale). In the ranking
    task the module follows `harness.tasks.RankingModel` instead (it is given the whole
    batch, scores every item for the batch's users, and computes its own ranking loss).

    exposes_features: the module has `feature_layers() -> list[nn.Module]`, whose
      outputs (captured by forward hooks) are the features feature distillers match.
    prunable: which pruning structures the model supports.
    presets: named parameter sets, e.g. {"teacher": {...}, "student": {...}}.
    """

    kind: ClassVar[str] = "model"
    exposes_features: ClassVar[bool] = False
    prunable: ClassVar[frozenset[str]] = frozenset()
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    @abstractmethod
    def build(self, data: DataBundle) -> nn.Module: ...


# --------------------------------------------------------------------------- distillers


@dataclass
class Step:
    """What a distiller's loss sees at one training step.

    task_loss is the student's own task loss on the batch (CE, MSE, the recommender's
    own ranking loss, ...), computed when first read: a distiller that replaces the
    task loss (e.g. CD's selective CF term) and never reads it saves its cost (its
    forward pass stays shared: `student_out`); student_out is the student's output on the
    batch (in the ranking task, whose models score items on request: the step's shared
    forward pass from the model's `encode`, to pass on to `score`, or None);
    teacher_out/teacher_features are None unless the distiller needs them ("logits",
    "features"), and were computed under no_grad with the teacher in eval mode.
    student/teacher are the models themselves (teacher None without a teacher), for
    distillers that query them, e.g. a ranking distiller asking for the scores of
    sampled items: query the teacher under torch.no_grad().
    epoch counts from 0 within the current training call, which lasts `epochs` epochs
    (e.g. for a schedule over the run, such as DE-RRD's temperature).

    Diagnostics: a distiller reports the terms of its loss with `log_terms` (each as it
    enters the loss, weight included; `task` for the task term it uses) and facts about
    what it did with `log_stats` (e.g. how many items it sampled). The runner averages
    them per epoch into the record's history and `diagnostics`, and the leaderboard
    shows the ratio of the distillation terms to the task term, flagging a distiller
    whose terms are under 1% of the loss: a term that small does nothing.
    """

    batch: dict[str, torch.Tensor]
    task: str
    student_out: torch.Tensor | None
    task_loss: torch.Tensor
    teacher_out: torch.Tensor | None = None
    student_features: list[torch.Tensor] | None = None
    teacher_features: list[torch.Tensor] | None = None
    epoch: int = 0
    student: nn.Module | None = None
    teacher: nn.Module | None = None
    epochs: int = 0
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor | float] = field(default_factory=dict)

    def log_terms(self, **terms: torch.Tensor) -> None:
        """The loss's terms as they enter it, e.g. `step.log_terms(task=cf, kd=lam * kd)`.
        Without a `task` entry the task term is taken to be `task_loss`."""
        self.terms.update(terms)

    def log_stats(self, **stats: torch.Tensor | float) -> None:
        """Per-step facts to average per epoch, e.g. `step.log_stats(sample_size=k)`."""
        self.stats.update(stats)


def _task_loss_get(step: Step) -> torch.Tensor:
    value = step.__dict__["_task_loss"]
    if callable(value):
        value = step.__dict__["_task_loss"] = value()
    return value


def _task_loss_set(step: Step, value: torch.Tensor | Callable[[], torch.Tensor]) -> None:
    step.__dict__["_task_loss"] = value


# task_loss may be given as a callable (the runner does): it is then computed on first
# read and kept, so that a distiller that never reads it never pays for it
Step.task_loss = property(_task_loss_get, _task_loss_set)  # type: ignore[assignment]


class Distiller(Component):
    """A training loss for the student, usually using a teacher.

    needs: any of "teacher" (a trained teacher is required), "logits" (teacher and
      student outputs are compared), "features" (both models expose features),
      "scores" (ranking scores). The grid skips cells that cannot provide them.
    diagnostics_note: see below; kept in the record's diagnostics.
    """

    kind: ClassVar[str] = "distiller"
    needs: ClassVar[frozenset[str]] = frozenset()
    #: when the method's own published settings make its terms small against some
    #: models' task loss, one line saying so; the leaderboard prints it beside the flag
    diagnostics_note: ClassVar[str] = ""

    def setup(
        self,
        teacher: nn.Module | None,
        student: nn.Module,
        data: DataBundle,
        example: dict[str, torch.Tensor],
    ) -> Iterable[nn.Parameter]:
        """Called once before training; return extra trainable parameters (e.g.
        attention heads). These are trained with the student and are not deployed.

        teacher: the trained teacher in eval mode (None when `needs` lacks "teacher").
        student: the freshly initialised student. data: the cell's DataBundle, on the
        cell's device. example: a prepared training batch (up to `budget.batch_size`
        rows, as the models see it) on the same device as both models. `probe(model,
        example)` gives the shapes of a model's output and features, and `projection`
        a learned map between two feature shapes."""
        return ()

    @abstractmethod
    def loss(self, step: Step) -> torch.Tensor: ...


@dataclass(frozen=True)
class Probe:
    """What one forward pass of a model on an example batch shows (see `probe`).

    output: the shape of the model's output, batch axis dropped (e.g. () for ratings,
      (n_classes,) for logits, (n_items,) for ranking scores).
    features: the shape of each of its `feature_layers()` outputs, in order, batch axis
      dropped, e.g. [(32, 8, 8), (64, 4, 4)] or [(16,)]; empty for a model without them.
    device: the device of the model's parameters (where extra parameters belong).
    """

    output: tuple[int, ...]
    features: list[tuple[int, ...]]
    device: torch.device


def probe(model: nn.Module, example: dict[str, torch.Tensor], task: str | None = None) -> Probe:
    """Shapes of `model`'s output and features on (two rows of) `example`, e.g. to size
    a distiller's own layers in `setup`. One forward pass under no_grad in eval mode
    (the model's mode is restored; nothing is trained). The batch goes through the
    task's own forward (`harness.tasks`: `model(batch["x"])`, or the whole batch in the
    ranking task); without a task, the ranking task's when the batch has no "x". The
    features come from a `FeatureTap`, as during training."""
    from .tasks import get_task  # (tasks imports this module)

    rows = {k: v[:2] for k, v in example.items()}
    name = task if task is not None else ("ranking" if "x" not in rows else "rating")
    forward = get_task(name).forward
    has_features = bool(model.feature_layers()) if hasattr(model, "feature_layers") else False
    tap = FeatureTap(model) if has_features else None
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), tap.record() if tap else contextlib.nullcontext():
            out = forward(model, rows)
        feats = tap.take() if tap else []
    finally:
        model.train(was)
        if tap:
            tap.close()
    return Probe(
        output=tuple(out.shape[1:]),
        features=[tuple(f.shape[1:]) for f in feats],
        device=next(model.parameters()).device,
    )


def projection(source: Iterable[int], target: Iterable[int]) -> nn.Module:
    """A learned map from features of shape `source` to shape `target` (batch axis
    dropped, as `Probe.features` gives them): a linear layer for vectors (C,), a 1×1
    convolution over channels for (C, L) and (C, H, W), followed by adaptive average
    pooling when the spatial sizes differ. FitNets' regressor is a convolution whose
    kernel makes the sizes agree; pooling instead is a simplification that keeps the
    map small. Return its parameters from `setup` so they train with the student."""
    src, tgt = tuple(source), tuple(target)
    if len(src) != len(tgt) or len(src) not in (1, 2, 3):
        raise ValueError(f"projection from {src} to {tgt}: expected (C,), (C, L) or (C, H, W) alike")
    if len(src) == 1:
        return nn.Linear(src[0], tgt[0])
    conv = nn.Conv1d if len(src) == 2 else nn.Conv2d
    layers: list[nn.Module] = [conv(src[0], tgt[0], kernel_size=1)]
    if src[1:] != tgt[1:]:
        pool = nn.AdaptiveAvgPool1d if len(src) == 2 else nn.AdaptiveAvgPool2d
        layers.append(pool(tgt[1:] if len(tgt) == 3 else tgt[1]))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- model helpers


def copy_model(model: nn.Module) -> nn.Module:
    """copy.deepcopy that also works on models whose modules hold computed tensors as
    attributes (torch.nn.utils.prune's masked `weight`, weight_norm): those are detached
    first; the modules' forward pre-hooks recompute them on the next pass. A copy never
    carries a `FeatureTap`'s hooks."""
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
    the passes run inside `record()` only (the runner records training passes, never
    evaluation). `take()` returns and forgets them; `close()` removes the hooks."""

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


# --------------------------------------------------------------------------- pruners


class Fit(Protocol):
    """The training services a pruner drives (implemented by the runner).

    student: the freshly initialised student.
    epochs: the cell's student budget in epochs.
    example: a prepared batch (as the models see it), e.g. to trace the model.
    primary: the task's primary metric and whether lower is better, e.g. ("mae", True).
    """

    student: nn.Module
    epochs: int
    example: dict[str, torch.Tensor]
    primary: tuple[str, bool]

    def train(
        self,
        model: nn.Module,
        epochs: int | None = None,
        distill: bool = True,
        on_epoch_end: Callable[[nn.Module, int], nn.Module | None] | None = None,
        select: str | None = None,
        start_epoch: int = 0,
    ) -> nn.Module:
        """Train `model` for `epochs` (default: the budget) with the cell's distiller
        (or the plain task loss when distill=False), with a fresh optimiser and the
        learning-rate schedule from its start. `on_epoch_end(model, epoch)` may return a
        replacement model (e.g. rebuilt smaller); training continues on it. `select`
        ("last" or "best_val") overrides the grid's budget.select for this call;
        `start_epoch` starts the learning-rate schedule there instead of at 0."""
        ...

    def evaluate(self, model: nn.Module, split: str = "val") -> dict[str, float]:
        """Score `model` on a split ("val" or "test") with the task's metrics."""
        ...

    def log_level(self, **values: Any) -> None:
        """Keep one pruning level in the record. The leaderboard's pruning-level table
        reads `removed` (fraction of weights or channels removed), `params`,
        `nonzero_params`, `val` (the `evaluate(model, "val")` metrics) and, optionally,
        `phase` and `winner` (True for the deployed level); other keys are kept."""
        ...


class Pruner(Component):
    """Wraps training with a pruning schedule.

    structure: "structured", "unstructured" or None (no pruning); cells whose student
    model does not support it are skipped.
    """

    kind: ClassVar[str] = "pruner"
    structure: ClassVar[str | None] = None

    @abstractmethod
    def fit(self, fit: Fit) -> nn.Module:
        """Train (and prune) the student; return the model to deploy."""
        ...


# --------------------------------------------------------------------------- energy


#: What an energy reading is: read from a counter; filled from power × time (a window
#: shorter than the counter's update period); estimated (not a hardware reading); or
#: unmeasured (joules None: the meter failed or read 0 J over a window with work).
QUALITIES = ("measured", "filled", "estimated", "unmeasured")


@dataclass
class EnergyReading:
    """Energy of one window. `estimate` is True when not measured by a hardware counter;
    `quality` is one of QUALITIES (default: estimated or measured, from `estimate`);
    `joules` is None when unmeasured, never a made-up 0."""

    joules: float | None
    seconds: float
    meter: str
    estimate: bool
    detail: str = ""
    quality: str = ""

    def __post_init__(self) -> None:
        if not self.quality:
            kind = "estimated" if self.estimate else "measured"
            self.quality = "unmeasured" if self.joules is None else kind


class EnergyMeter(ABC):
    """Measures energy between `begin()` and `end()`.

    name, description: as shown in records and `harness plugins`.
    priority: higher is preferred; the runner picks the available meter of highest
      priority for the cell's device.
    estimate: True when the meter does not read a hardware counter.
    """

    kind: ClassVar[str] = "energy_meter"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    priority: ClassVar[int] = 0
    estimate: ClassVar[bool] = False
    tasks: ClassVar[frozenset[str]] = frozenset(TASKS)

    @classmethod
    def unavailable(cls, device: torch.device) -> str | None:
        """Return None when usable on `device`, else the reason it is not."""
        return None

    def __init__(self, device: torch.device, **options: Any) -> None:
        """options: the grid's energy settings (e.g. cpu_watts_per_core); a meter
        ignores those it does not use."""
        self.device = device

    @abstractmethod
    def begin(self) -> None:
        """Start/stop a window (see the class docstring)."""

    @abstractmethod
    def end(self) -> EnergyReading:
        """Start/stop a window (see the class docstring)."""

    def close(self) -> None:  # noqa: B027  (optional)
        """Release resources (threads, handles)."""


def check_tasks(values: Iterable[str], where: str) -> frozenset[str]:
    values = frozenset(values)
    bad = values - set(TASKS)
    if bad:
        raise ValueError(f"{where}: unknown task(s) {sorted(bad)}; known: {', '.join(TASKS)}")
    return values


__all__ = [
    "TASKS",
    "NEEDS",
    "STRUCTURES",
    "Param",
    "Component",
    "TensorSplit",
    "DataBundle",
    "Dataset",
    "ModelFactory",
    "Step",
    "Distiller",
    "Probe",
    "probe",
    "projection",
    "Fit",
    "Pruner",
    "EnergyReading",
    "EnergyMeter",
    "check_tasks",
]
