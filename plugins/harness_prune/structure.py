"""Masks during training, a smaller dense model at the end.

Structured pruning removes channels (conv filters, linear units). Channels are coupled:
in a residual network every layer that writes to or reads from the same residual
stream must keep the same channels. The coupling groups come from torch-pruning's
dependency graph (DepGraph, Fang et al. 2023), which traces the model once; it finds
the 10 groups of WRN-16-2 (residual streams and block-internal channels), the conv
stages and flatten of the movie dcnn, and the hidden units of an MLP. The model's output
layer (its last Linear) is never pruned.

During training the removed channels are masked with torch.nn.utils.prune (the mask is
applied before every forward pass): the out-channel slices of every producer in the
group (conv/linear weight rows and biases) and of every batch norm in it (gamma and
beta, since a zero filter alone leaks the next BN's beta through the ReLU). Shapes stay
fixed, so rewinding to the initial weights and the SAD attention stay simple. At the end
`shrink` makes the masks permanent and removes the masked channels with torch-pruning,
giving a dense model with fewer channels; tests check it gives the masked model's
outputs (within 1e-5).

Importance of a channel (Li et al. 2017): the L1 norm of its filters, summed over the
producers of its group. Each pruning event removes `rate` of the channels that still
survive in every group (per group, like torch.nn.utils.prune.ln_structured per layer),
keeping at least one. With `round_to` (the pruners' default 8), a group whose width is
a multiple of it and at least 4 times it keeps the multiple nearest to the schedule's
survivors n (1 - rate)^events instead (at least `round_to`): rounding moves its removed
fraction by at most round_to / (2 n) <= 1/8 (MAX_ROUNDING_SHIFT).

Unstructured pruning (global magnitude, Frankle & Carbin; open_lth's default) masks
individual conv/linear/embedding weights (recommenders are mostly embeddings),
smallest |w| first across the whole model; the model
keeps its dense shape and reports non-zero parameters and sparse bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

from harness.api import copy_model
from harness.errors import CellError

ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


def output_layer(model: nn.Module) -> nn.Module:
    """The layer that must keep its outputs: the model's own `prune_ignore()` if any
    (None: no layer is exempt), else its last Linear."""
    if hasattr(model, "prune_ignore"):
        return model.prune_ignore()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CellError(f"{type(model).__name__} has no Linear output layer to keep")
    return linears[-1]


#: the most that rounding may move a group's removed fraction from what the schedule
#: asks: round_to / (2 n), half a multiple either way. A group is rounded only if its
#: width n is a multiple of round_to and n >= round_to / (2 * MAX_ROUNDING_SHIFT): 32
#: channels for round_to 8 (1/16, i.e. 64 channels, left WRN-16-2's 32-channel stage,
#: a third of its FLOPs, at odd widths and 40% removed at 0.63 of its FLOPs speedup).
MAX_ROUNDING_SHIFT = 1 / 8


def rounds(n: int, round_to: int) -> bool:
    """Whether a group of `n` channels keeps multiples of `round_to` (see MAX_ROUNDING_SHIFT)."""
    return n % round_to == 0 and round_to / (2 * n) <= MAX_ROUNDING_SHIFT


@dataclass
class Group:
    """One set of coupled channels: the producers whose out-channels are pruned together."""

    root: str  # module name of the group's root layer
    n: int  # channels
    producers: list[str]  # conv/linear modules whose out-channels are these channels
    norms: list[str]  # batch norms over these channels
    pruned: set[int] = field(default_factory=set)

    @property
    def alive(self) -> list[int]:
        return [i for i in range(self.n) if i not in self.pruned]


def _dependency_graph(
    model: nn.Module, example: torch.Tensor | dict[str, torch.Tensor]
) -> tp.DependencyGraph:
    """torch-pruning's graph, traced by calling the model on `example`: a tensor (the
    batch's "x") or a whole batch (ranking models take the batch itself)."""
    return tp.DependencyGraph().build_dependency(model, example_inputs=example, forward_fn=lambda m, x: m(x))


def _groups(model: nn.Module, example: torch.Tensor | dict[str, torch.Tensor]) -> list[Group]:
    names = {m: n for n, m in model.named_modules()}
    was = model.training
    model.eval()
    try:
        dg = _dependency_graph(model, example)
        ignored = [m for m in [output_layer(model)] if m is not None]
        found = dg.get_all_groups(ignored_layers=ignored, root_module_types=ROOT_TYPES)
    except Exception as e:  # a model torch-pruning cannot trace
        raise CellError(f"cannot trace {type(model).__name__} for structured pruning: {e}") from e
    finally:
        model.train(was)
    out = []
    for g in found:
        root = g[0].dep.target.module
        n = len(g[0].idxs)
        producers, norms = [], []
        for dep, idxs in g:
            mod = dep.target.module
            if dep.handler.__name__ != "prune_out_channels" or mod not in names or len(idxs) != n:
                continue
            if isinstance(mod, ROOT_TYPES):
                producers.append(names[mod])
            elif isinstance(mod, NORM_TYPES):
                norms.append(names[mod])
        out.append(Group(names[root], n, sorted(set(producers)), sorted(set(norms))))
    return out


class StructuredMasks:
    """Channel masks on a model (same shapes), and the smaller dense model they imply."""

    def __init__(self, model: nn.Module, example: torch.Tensor | dict[str, torch.Tensor]) -> None:
        self.example = example
        self.groups = _groups(model, example)
        self.events = 0  # pruning events so far (the rounded groups' target follows them)
        if not self.groups:
            raise CellError(f"{type(model).__name__} has no prunable channel groups")

    @property
    def channels(self) -> int:
        return sum(g.n for g in self.groups)

    @property
    def removed_fraction(self) -> float:
        return sum(len(g.pruned) for g in self.groups) / self.channels

    def importance(self, model: nn.Module, g: Group) -> torch.Tensor:
        mods = dict(model.named_modules())
        score = torch.zeros(g.n)
        for name in g.producers:
            w = mods[name].weight.detach().abs()
            score += w.reshape(w.shape[0], -1).sum(1).cpu()
        return score

    def prune(self, model: nn.Module, rate: float, round_to: int = 1) -> None:
        """Remove `rate` of the surviving channels of every group (lowest L1 first).

        With round_to > 1, a group that `rounds` keeps the multiple of `round_to`
        nearest to its unrounded survivors n * (1 - rate)^events (at least `round_to`):
        the target is tracked over events, so a small rate still prunes (a per-event
        rounding of 10% of 32 channels would never move). Other groups prune as with
        round_to 1."""
        self.events += 1
        for g in self.groups:
            alive = g.alive
            if round_to > 1 and rounds(g.n, round_to):
                ideal = g.n * (1 - rate) ** self.events
                keep = max(round_to, int(round(ideal / round_to)) * round_to)
                k = len(alive) - min(keep, len(alive))
            else:
                k = min(int(round(rate * len(alive))), len(alive) - 1)
            if k <= 0:
                continue
            score = self.importance(model, g)
            order = sorted(alive, key=lambda i: (float(score[i]), i))
            g.pruned.update(order[:k])
        self.apply(model)

    def apply(self, model: nn.Module) -> None:
        """(Re)apply every group's mask to `model` (a model of the same architecture)."""
        mods = dict(model.named_modules())
        for g in self.groups:
            if not g.pruned:
                continue
            idx = torch.tensor(sorted(g.pruned))
            for name in g.producers + g.norms:
                mod = mods[name]
                for pname in ("weight", "bias"):
                    if getattr(mod, pname, None) is None:
                        continue
                    current = getattr(mod, pname)
                    mask = torch.ones_like(current)
                    mask[idx] = 0
                    if prune.is_pruned(mod) and hasattr(mod, pname + "_mask"):
                        mask = mask * getattr(mod, pname + "_mask")
                        prune.remove(mod, pname)
                    prune.custom_from_mask(mod, pname, mask)

    def shrink(self, model: nn.Module) -> nn.Module:
        """A dense copy of `model` without the masked channels."""
        small = make_permanent(copy_model(model))
        small.eval()
        dg = _dependency_graph(small, self.example)
        mods = dict(small.named_modules())
        for g in self.groups:
            if not g.pruned:
                continue
            root = mods[g.root]
            fn = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else (tp.prune_conv_out_channels)
            group = dg.get_pruning_group(root, fn, idxs=sorted(g.pruned))
            group.prune()
        small.train(model.training)
        return small


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every torch.nn.utils.prune mask into its parameter (zeros stay zeros)."""
    for mod in model.modules():
        for hook in list(mod._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(mod, hook._tensor_name)
    return model


class UnstructuredMasks:
    """Global magnitude masks on the conv/linear/embedding weights (biases and norms
    untouched)."""

    def __init__(self, model: nn.Module) -> None:
        keep = output_layer(model)
        self.targets = [
            name
            for name, m in model.named_modules()
            if isinstance(m, (*ROOT_TYPES, nn.Embedding)) and m is not keep
        ]
        if not self.targets:
            raise CellError(f"{type(model).__name__} has no conv, linear or embedding weights to prune")
        self.total = sum(dict(model.named_modules())[n].weight.numel() for n in self.targets)
        self.masks: dict[str, torch.Tensor] = {}

    @property
    def removed_fraction(self) -> float:
        return sum(int((m == 0).sum()) for m in self.masks.values()) / self.total

    def prune(self, model: nn.Module, rate: float, round_to: int = 1) -> None:
        """Mask `rate` of the surviving weights with the smallest magnitude, globally
        (`round_to` concerns channels and does not apply to single weights)."""
        mods = dict(model.named_modules())
        scores = []
        for n in self.targets:
            w = mods[n].weight.detach().abs().flatten().cpu()
            m = self.masks.get(n)
            scores.append(
                torch.where(m.flatten().bool().cpu(), w, torch.full_like(w, float("inf")))
                if m is not None
                else w
            )
        flat = torch.cat(scores)
        alive = int(torch.isfinite(flat).sum())
        k = int(round(rate * alive))
        if k <= 0:
            return
        threshold_idx = torch.topk(flat, k, largest=False).indices
        kill = torch.zeros_like(flat, dtype=torch.bool)
        kill[threshold_idx] = True
        start = 0
        for n, s in zip(self.targets, scores, strict=True):
            w = mods[n].weight
            part = kill[start : start + s.numel()].view_as(w)
            start += s.numel()
            old = self.masks.get(n, torch.ones_like(w))
            self.masks[n] = old * (~part.to(w.device)).to(w.dtype)
        self.apply(model)

    def apply(self, model: nn.Module) -> None:
        mods = dict(model.named_modules())
        for n, mask in self.masks.items():
            mod = mods[n]
            if prune.is_pruned(mod) and hasattr(mod, "weight_mask"):
                prune.remove(mod, "weight")
            prune.custom_from_mask(mod, "weight", mask)

    def shrink(self, model: nn.Module) -> nn.Module:
        """Unstructured sparsity keeps the dense shape: fold the masks into the weights."""
        return make_permanent(copy_model(model))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's current values by plain parameter name (masks' `_orig` folded back)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("_mask"):
            continue
        out[key.removesuffix("_orig")] = value.detach().clone()
    return out


def rewind(model: nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Reset every parameter and buffer to `values` (from `snapshot`), masks kept: the
    survivors of a lottery ticket go back to their initial (or early) values."""
    state = model.state_dict()
    with torch.no_grad():
        for key, tensor in state.items():
            if key.endswith("_mask"):
                continue
            plain = key.removesuffix("_orig")
            if plain in values:
                tensor.copy_(values[plain])
