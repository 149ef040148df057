"""Stage 4, train: the training loop that every model of a cell goes through (teacher,
student, a pruner's rounds), with the distiller's loss in place of the task loss when
there is one; the optimiser and its learning-rate schedule; the per-epoch log of what a
distiller reports."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..api import DataBundle, Distiller, FeatureTap, Step, copy_model
from ..errors import CellError
from ..grid import TRAIN
from ..memory import retain_freed_memory
from ..spec import Regime, freeze
from ..tasks import Task


def as_regime(cfg: Regime | Mapping[str, Any]) -> Regime:
    """A cell's `Regime`, or one made of a plain mapping of train settings (benchmarks
    and tests pass those): settings it leaves out take the grid's defaults."""
    if isinstance(cfg, Regime):
        return cfg
    return Regime(**{k: freeze(cfg[k] if k in cfg else p.default) for k, p in TRAIN.items()})


def make_optimizer(params: list[nn.Parameter], cfg: Regime | Mapping[str, Any]) -> torch.optim.Optimizer:
    cfg = as_regime(cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    if cfg.optimizer == "adagrad":  # (the CD paper's CDAE)
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(cfg: Regime | Mapping[str, Any], epoch: int) -> float:
    """Step schedule: lr × gamma for every milestone already reached (epochs from 0)."""
    cfg = as_regime(cfg)
    return cfg.lr * cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)


@dataclass
class _Pass:
    """What one training run holds fixed across its epochs (see `train_model`)."""

    data: DataBundle
    task: Task
    cfg: Regime
    epochs: int
    batch_size: int
    generator: torch.Generator
    aug: torch.Generator
    split: str
    distiller: Distiller | None
    teacher: nn.Module | None
    use_teacher: bool
    extra: list[nn.Parameter]
    precision: _Precision
    #: the distiller's loss, compiled when the regime says so (`_compiled_loss`)
    distill_loss: Callable[[Step], torch.Tensor] | None = None


#: torch.autocast's dtype for each `train.autocast` setting but none
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class _Precision:
    """The training step's precision (`Regime.autocast`): float32, or the step's forward
    passes and loss under torch.autocast (matmuls and convolutions in bf16 or fp16, the
    parameters, their gradients and the optimiser's state kept in float32), with a
    gradient scaler for fp16, whose narrow range would flush small gradients to 0."""

    def __init__(self, setting: str, device: torch.device) -> None:
        self.dtype = AUTOCAST.get(setting)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if setting == "fp16" else None

    def forward(self) -> contextlib.AbstractContextManager:
        """The context of a step's forward passes and loss."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, clip: Callable[[], Any]) -> None:
        """Backward pass, `clip` of the gradients, optimiser step."""
        if self.scaler is None:
            loss.backward()
            clip()
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)  # (the clip sees the true gradients)
        clip()
        self.scaler.step(opt)  # (skipped when a gradient overflowed; the scale then falls)
        self.scaler.update()


def train_model(
    model: nn.Module,
    data: DataBundle,
    task: Task,
    cfg: Regime | Mapping[str, Any],
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
    Raises CellError on a NaN or infinite loss. Freed memory is kept for reuse (memory.py).
    """
    retain_freed_memory()
    regime = as_regime(cfg)
    needs = distiller.needs if distiller is not None else frozenset()
    want_features = "features" in needs
    # the teacher's outputs are computed per batch for distillers that compare outputs
    # or features; others (ranking) query the teacher themselves through Step.teacher
    use_teacher = teacher is not None and bool(needs & {"logits", "features"})
    extra = list(extra_params or [])
    if teacher is not None:
        teacher.eval()

    def taps(m: nn.Module) -> FeatureTap | None:
        return FeatureTap(m) if want_features else None

    s_tap, t_tap = taps(model), (taps(teacher) if use_teacher else None)
    device = next(model.parameters()).device
    # augmentation draws from its own generator on the data's device, seeded from the
    # shuffling generator, so a cell is reproducible on CPU and on CUDA alike
    aug = torch.Generator(device=device)
    aug.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    run = _Pass(
        data, task, regime, epochs, batch_size, generator, aug, task.train_split(model), distiller, teacher,
        use_teacher, extra, _Precision(regime.autocast, device), _compiled_loss(regime, distiller),
    )  # fmt: skip
    opt = make_optimizer(list(model.parameters()) + extra, regime)
    metric = next(m for m in task.metrics if m.name == task.primary)
    best: tuple[float, nn.Module] | None = None  # (signed score, model) of the best epoch
    bar = tqdm(range(epochs), desc=desc, leave=False, disable=not progress, unit="epoch")
    try:
        for epoch in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(regime, start_epoch + epoch)
            entry = _train_epoch(run, model, opt, epoch, s_tap, t_tap)
            if select == "best_val":
                best = _keep_best(best, model, run, metric, eval_batch_size, entry)
            if history is not None:
                history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            if on_epoch_end is not None:
                replaced = on_epoch_end(model, epoch)
                if replaced is not None and replaced is not model:
                    model = replaced
                    if s_tap:
                        s_tap.close()
                        s_tap = taps(model)
                    opt = make_optimizer(list(model.parameters()) + extra, regime)
    finally:
        bar.close()
        for tap in (s_tap, t_tap):
            if tap:
                tap.close()
    return best[1] if best is not None else model


def _compiled_loss(regime: Regime, distiller: Distiller | None) -> Callable[[Step], torch.Tensor] | None:
    """The distiller's loss as a step calls it: compiled by torch.compile (inductor) when
    `regime.compile`, else the plain method. Only the loss: compiling the student made its
    step slower on CPU, and the teacher's forward hooks (FeatureTap) are not guarded by
    dynamo, so a compiled teacher would keep a stale tap (docs/models.md)."""
    if distiller is None:
        return None
    return torch.compile(distiller.loss) if regime.compile else distiller.loss


def _keep_best(
    best: tuple[float, nn.Module] | None,
    model: nn.Module,
    run: _Pass,
    metric: Any,
    eval_batch_size: int,
    entry: dict[str, Any],
) -> tuple[float, nn.Module] | None:
    """Score `model` on the validation split (into the epoch's `entry`); a copy of it
    when it beats `best`, else `best`."""
    score = run.task.evaluate(model, run.data.val, run.data, eval_batch_size)[metric.name]
    entry[f"val_{metric.name}"] = score
    signed = score if metric.lower_is_better else -score
    if best is None or signed < best[0]:
        return (signed, copy_model(model))  # (copies carry no feature tap)
    return best


def _train_epoch(
    run: _Pass,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    epoch: int,
    s_tap: FeatureTap | None,
    t_tap: FeatureTap | None,
) -> dict[str, Any]:
    """One pass over the training split; returns the epoch's history entry (mean loss
    and what the distiller logged). Raises CellError on a NaN or infinite loss."""
    model.train()
    total = torch.zeros((), device=next(model.parameters()).device)
    steps = 0
    logged = _EpochLog()
    batches = run.data.batches(
        run.split, run.batch_size, train=True, generator=run.generator, aug_generator=run.aug
    )

    def clip() -> None:
        if run.cfg.grad_clip:
            nn.utils.clip_grad_norm_(list(model.parameters()) + run.extra, run.cfg.grad_clip)

    for batch in batches:
        with run.precision.forward():
            with s_tap.record() if s_tap else contextlib.nullcontext():
                out = run.task.train_forward(model, batch)
            if run.distiller is None:
                loss = run.task.train_loss(model, batch, out)
            else:  # (the task loss computed when the distiller reads it: Step.task_loss)
                task_loss = functools.partial(run.task.train_loss, model, batch, out)
                step = _distill_step(run, model, batch, out, task_loss, epoch, s_tap, t_tap)
                loss = run.distill_loss(step)
                logged.add(step)
        opt.zero_grad(set_to_none=True)
        run.precision.step(loss, opt, clip)
        total += loss.detach().float()
        steps += 1
    mean_loss = float(total) / max(steps, 1)  # one sync per epoch
    if not np.isfinite(mean_loss):
        raise CellError(f"loss became {mean_loss} in epoch {epoch + 1}")
    return {"epoch": epoch + 1, "loss": mean_loss, **logged.means()}


def _distill_step(
    run: _Pass,
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    out: torch.Tensor,
    task_loss: Callable[[], torch.Tensor],
    epoch: int,
    s_tap: FeatureTap | None,
    t_tap: FeatureTap | None,
) -> Step:
    """The `Step` a distiller scores: the teacher's outputs and features on this batch
    (when it compares them) beside the student's."""
    t_out, t_feats = None, None
    if run.use_teacher:
        with torch.no_grad(), t_tap.record() if t_tap else contextlib.nullcontext():
            t_out = run.task.forward(run.teacher, batch)
        t_feats = t_tap.take() if t_tap else None
    return Step(
        batch=batch,
        task=run.task.name,
        student_out=out,
        task_loss=task_loss,
        teacher_out=t_out,
        teacher_features=t_feats,
        student_features=s_tap.take() if s_tap else None,
        epoch=epoch,
        student=model,
        teacher=run.teacher,
        epochs=run.epochs,
    )


class _EpochLog:
    """Sums of the terms and stats distillers log per step (`Step.log_terms`,
    `Step.log_stats`), kept on the device and read once per epoch."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, torch.Tensor]] = {"terms": {}, "stats": {}}
        self.steps = 0

    def add(self, step: Step) -> None:
        terms = dict(step.terms)
        if terms and "task" not in terms:  # (not setdefault: it would compute a lazy task loss)
            terms["task"] = step.task_loss
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
