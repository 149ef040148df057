"""SP, LTH and SS: Bharadhwaj et al.'s (2024) pruning schedules around distillation (its Algorithm 1),
plus LTH's unstructured variant; docs/pruning.md names the sources.

Choices the paper leaves open, made here (and named in docs/pruning.md):
- `rate` is a fraction of the channels (weights, for lth-u) that still survive, per
  pruning event: 0.9^8 of SP's channels survive 8 events at rate 0.1.
- Structured pruning is per coupled channel group (each group loses `rate` of its
  survivors; see structure.py); unstructured pruning is global magnitude.
- SP keeps its optimiser, momentum and learning-rate schedule across pruning events
  (it is one training run). LTH and SS restart the optimiser and the schedule at every
  round (each round is a fresh training from the rewound weights, as in Frankle & Carbin).
- Levels: the model at the end of each pruning interval, before the next pruning (level
  0 is dense). Each level's validation metrics and deployed size are kept in the record;
  the winning ticket is the level with the best validation score or, with
  `tolerance` > 0, the smallest level within `tolerance` of it (in the metric's units).
  Only the winner is evaluated on test and deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.api import Fit, Param, Pruner, copy_model, count_nonzero, count_parameters
from harness.errors import UsageError

from .structure import StructuredMasks, UnstructuredMasks, rewind, snapshot


@dataclass
class Level:
    index: int
    model: nn.Module  # the masked model at this level
    state: Any  # the masks' state at this level
    values: dict[str, Any]


def _mask_state(masks: StructuredMasks | UnstructuredMasks) -> Any:
    if isinstance(masks, StructuredMasks):
        return [set(g.pruned) for g in masks.groups]
    return {k: v.clone() for k, v in masks.masks.items()}


def _set_mask_state(masks: StructuredMasks | UnstructuredMasks, state: Any) -> None:
    if isinstance(masks, StructuredMasks):
        for g, pruned in zip(masks.groups, state, strict=True):
            g.pruned = set(pruned)
    else:
        masks.masks = {k: v.clone() for k, v in state.items()}


class Levels:
    """The pruning levels visited, and the winning ticket among them."""

    def __init__(self, fit: Fit, masks: StructuredMasks | UnstructuredMasks, tolerance: float) -> None:
        self.fit, self.masks, self.tolerance = fit, masks, tolerance
        self.levels: list[Level] = []

    def record(self, model: nn.Module, epochs: int, phase: str = "") -> Level:
        deployed = self.masks.shrink(model)
        values = {
            "level": len(self.levels),
            "removed": round(self.masks.removed_fraction, 6),
            "params": count_parameters(deployed),
            "nonzero_params": count_nonzero(deployed),
            "epochs": epochs,
            "val": self.fit.evaluate(model, "val"),
        }
        if phase:
            values["phase"] = phase
        level = Level(len(self.levels), copy_model(model), _mask_state(self.masks), values)
        self.levels.append(level)
        return level

    def winner(self, among: list[Level] | None = None) -> Level:
        levels = among or self.levels
        name, lower = self.fit.primary
        sign = 1 if lower else -1
        best = min(levels, key=lambda lv: sign * lv.values["val"][name])
        if self.tolerance > 0:
            bound = best.values["val"][name] + sign * self.tolerance
            near = [lv for lv in levels if sign * lv.values["val"][name] <= sign * bound]
            best = min(near, key=lambda lv: (lv.values["nonzero_params"], lv.index))
        return best

    def deploy(self, level: Level) -> nn.Module:
        """Keep every level in the record, the deployed one marked, and return it shrunk."""
        for lv in self.levels:
            self.fit.log_level(**lv.values, winner=lv is level)
        _set_mask_state(self.masks, level.state)
        return self.masks.shrink(level.model)


COMMON = {
    "rate": Param(0.1, "fraction of the surviving channels removed at each pruning event"),
    "every": Param(20, "epochs between pruning events (SP) / epochs of one round (LTH, SS)"),
    "tolerance": Param(
        0.0,
        "0: the winning level has the best validation score; > 0: the "
        "smallest level within this much of the best (metric units)",
    ),
    "round_to": Param(
        8,
        "keep a multiple of this many channels in every group whose width is a multiple "
        "of it and at least 4 times it (1: no rounding; structured pruning only)",
    ),
}


def _check(params: dict[str, Any], where: str) -> None:
    if not 0 < params["rate"] < 1:
        raise UsageError(f"{where}.rate: must be between 0 and 1")
    if params["every"] < 1:
        raise UsageError(f"{where}.every: must be at least 1")
    if params.get("round_to", 1) < 1:
        raise UsageError(f"{where}.round_to: must be at least 1")
    if params["tolerance"] < 0:
        raise UsageError(f"{where}.tolerance: must be 0 or more")


class StructuredPruning(Pruner):
    name = "sp"
    label = "SP"
    description = (
        "structured pruning during training: every `every` epochs remove `rate` of "
        "the channels with the smallest L1 norm, keep the rest's weights"
    )
    tasks = frozenset({"classification", "rating", "ranking"})
    structure = "structured"
    params = dict(COMMON)

    @classmethod
    def check(cls, params, where):
        _check(params, where)

    def fit(self, fit: Fit) -> nn.Module:
        p = self.hparams
        masks = StructuredMasks(fit.student, model_input(fit.example))
        levels = Levels(fit, masks, p["tolerance"])

        def on_epoch_end(model: nn.Module, epoch: int) -> None:
            done = epoch + 1
            if done % p["every"] == 0 and done < fit.epochs:
                levels.record(model, done)
                masks.prune(model, p["rate"], p.get("round_to", 1))

        model = fit.train(fit.student, on_epoch_end=on_epoch_end, select="last")
        levels.record(model, fit.epochs)
        return levels.deploy(levels.winner())


def model_input(example: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
    """What the model's forward takes: the batch's "x", or the batch (ranking models)."""
    return example["x"] if "x" in example else example


class _Ticket(Pruner):
    """Shared by lth, lth-u and ss: iterative magnitude pruning with rewinding."""

    tasks = frozenset({"classification", "rating", "ranking"})
    params = {
        **COMMON,
        "rate": Param(
            0.05, "fraction of the surviving channels (weights, for lth-u) removed after each round"
        ),
        "every": Param(75, "epochs of training in each round"),
        "rewind_epoch": Param(
            0,
            "rewind the survivors to their values after this many epochs "
            "of the first round (0: the initial weights, as Frankle & Carbin)",
        ),
        "schedule": Param(
            "restart",
            "learning-rate schedule of the rounds: restart (each round from epoch 0, as "
            "Frankle & Carbin) or continue (one schedule over all rounds, e.g. Bharadhwaj et al.'s (2024) "
            "LTH milestones 170/340/510)",
            choices=("restart", "continue"),
        ),
    }

    @classmethod
    def check(cls, params, where):
        _check(params, where)
        if params["rewind_epoch"] < 0 or params["rewind_epoch"] >= params["every"]:
            raise UsageError(f"{where}.rewind_epoch: must be in [0, every)")

    def masks(self, fit: Fit) -> StructuredMasks | UnstructuredMasks:
        return StructuredMasks(fit.student, model_input(fit.example))

    def search(
        self, fit: Fit, rounds: int, distill: bool, levels: Levels, masks: StructuredMasks | UnstructuredMasks
    ) -> dict[str, torch.Tensor]:
        """Train `rounds` rounds, pruning and rewinding between them; return the rewind
        point."""
        p = self.hparams
        rewind_to = snapshot(fit.student)

        def capture(model: nn.Module, epoch: int) -> None:
            nonlocal rewind_to
            if epoch + 1 == p["rewind_epoch"]:
                rewind_to = snapshot(model)

        model = fit.student
        for r in range(rounds):
            model = fit.train(
                model,
                start_epoch=r * p["every"] if p["schedule"] == "continue" else 0,
                epochs=p["every"],
                distill=distill,
                on_epoch_end=capture if r == 0 and p["rewind_epoch"] else None,
            )
            levels.record(model, (r + 1) * p["every"], phase="" if distill else "ticket search")
            if r < rounds - 1:
                masks.prune(model, p["rate"], p.get("round_to", 1))
                rewind(model, rewind_to)
        return rewind_to


class LotteryTicket(_Ticket):
    name = "lth"
    label = "LTH"
    description = (
        "lottery ticket (structured, as Bharadhwaj et al. 2024): train a round, remove `rate` of "
        "the channels, rewind survivors to their initial weights, repeat"
    )
    structure = "structured"

    def fit(self, fit: Fit) -> nn.Module:
        masks = self.masks(fit)
        levels = Levels(fit, masks, self.hparams["tolerance"])
        rounds = max(1, fit.epochs // self.hparams["every"])
        self.search(fit, rounds, True, levels, masks)
        return levels.deploy(levels.winner())


class LotteryTicketUnstructured(LotteryTicket):
    name = "lth-u"
    label = "LTH-U"
    description = (
        "lottery ticket, unstructured: global magnitude pruning of conv/linear/embedding "
        "weights with rewinding; the dense shape stays (non-zeros are reported)"
    )
    structure = "unstructured"
    params = {
        **{k: v for k, v in _Ticket.params.items() if k != "round_to"},  # single weights
        "rate": Param(0.2, "fraction of the surviving weights removed after each round"),
    }

    def masks(self, fit: Fit) -> UnstructuredMasks:
        return UnstructuredMasks(fit.student)


class SparseStudent(_Ticket):
    name = "ss"
    label = "SS"
    description = (
        "sparse student: find a lottery ticket without distillation, then train "
        "that pruned student from its initial weights with the grid's distiller"
    )
    structure = "structured"
    params = {
        **_Ticket.params,
        "rate": Param(0.05, "fraction of the surviving channels removed after each search round"),
        "every": Param(20, "epochs of each ticket-search round"),
        "rounds": Param(8, "ticket-search rounds (without distillation)"),
    }

    @classmethod
    def check(cls, params, where):
        super().check(params, where)
        if params["rounds"] < 1:
            raise UsageError(f"{where}.rounds: must be at least 1")

    def fit(self, fit: Fit) -> nn.Module:
        masks = self.masks(fit)
        levels = Levels(fit, masks, self.hparams["tolerance"])
        rewind_to = self.search(fit, self.hparams["rounds"], False, levels, masks)
        ticket = levels.winner()
        ticket.values["chosen_ticket"] = True
        _set_mask_state(masks, ticket.state)
        student = copy_model(ticket.model)
        rewind(student, rewind_to)
        masks.apply(student)
        model = fit.train(student, distill=True)
        final = levels.record(
            model, self.hparams["rounds"] * self.hparams["every"] + fit.epochs, phase="distilled ticket"
        )
        return levels.deploy(final)
