"""Tasks: how the core calls a model, computes the task loss and scores predictions.

classification: logits [B, C], cross-entropy; metric top-1 error (and accuracy).
rating: predictions [B] on the standardised target, MSE; metrics MAE, MSE, RMSE on the
  original scale (undoing the dataset's target_mean/target_std).
ranking: top-N recommendation with leave-one-out splits; the model scores every item
  for a batch of users and trains on its own ranking loss (see `RankingModel`); metrics
  HR@K and NDCG@K over the full item set, with the user's training items excluded.

Each task also gives per-example outcomes (`Task.outcomes`: per image correct or not,
per rating absolute and squared error, per user HR@K and NDCG@K), whose means are its
metrics; the store keeps them for the test split so that any two cells can be compared
example by example after the fact (harness/stats.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .api import DataBundle, TensorSplit


@dataclass(frozen=True)
class Metric:
    name: str
    lower_is_better: bool


class Task(ABC):
    name: str = ""
    metrics: tuple[Metric, ...] = ()
    #: the metric used to pick e.g. a winning pruning level
    primary: str = ""
    #: the per-example outcome behind the primary metric and its scale: primary metric =
    #: offset + scale × mean(outcome), so Δ primary = scale × Δ mean(outcome)
    primary_outcome: tuple[str, float] = ("", 1.0)
    #: the per-example paired test of the primary outcome (harness.stats.paired_test)
    paired_test: str = "wilcoxon"

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["x"])

    def train_split(self, model: nn.Module) -> str:
        """The split a model trains on (one of the data's splits)."""
        return "train"

    def train_forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        """The model's output on a training batch: what the task loss and a distiller
        of the step share (`Step.student_out`)."""
        return self.forward(model, batch)

    def train_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], out: Any) -> torch.Tensor:
        """The task's training loss of a step, given its `train_forward` output."""
        return self.loss(out, batch)

    def train_step(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The model's output on a training batch and its task loss."""
        out = self.train_forward(model, batch)
        return out, self.train_loss(model, batch, out)

    @abstractmethod
    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The task's training loss of the model's output on a batch."""

    @abstractmethod
    def evaluate(
        self, model: nn.Module, split: TensorSplit, data: DataBundle, batch_size: int
    ) -> dict[str, float]:
        """The task's metrics of `model` on `split` (eval mode, no gradients)."""

    @abstractmethod
    def outcomes(
        self, model: nn.Module, split: TensorSplit, data: DataBundle, batch_size: int
    ) -> dict[str, np.ndarray]:
        """Per-example outcomes of `model` on `split`, in the split's order (eval mode,
        no gradients); their means are the task's metrics (up to the metrics' scale).
        A separate pass from `evaluate`, so the per-epoch evaluation stays as cheap."""


def _cat(parts: list[torch.Tensor], dtype: type = np.float32) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=dtype)
    return torch.cat(parts).detach().cpu().numpy().astype(dtype)


class Classification(Task):
    name = "classification"
    metrics = (Metric("top1_error", True), Metric("accuracy", False))
    primary = "top1_error"
    primary_outcome = ("correct", -100.0)  # top-1 error % = 100 - 100 × mean(correct)
    paired_test = "mcnemar"

    def loss(self, out, batch):
        return F.cross_entropy(out, batch["y"])

    @torch.no_grad()
    def outcomes(self, model, split, data, batch_size):
        was = model.training
        model.eval()
        correct = []
        for batch in split.batches(batch_size):
            batch = data.prepare(batch)
            correct.append(self.forward(model, batch).argmax(dim=1) == batch["y"])
        model.train(was)
        return {"correct": _cat(correct, np.bool_)}

    @torch.no_grad()
    def evaluate(self, model, split, data, batch_size):
        was = model.training
        model.eval()
        correct, n = 0, 0
        for batch in split.batches(batch_size):
            batch = data.prepare(batch)
            pred = self.forward(model, batch).argmax(dim=1)
            correct += int((pred == batch["y"]).sum())
            n += len(pred)
        model.train(was)
        acc = correct / max(n, 1)
        return {"top1_error": 100.0 * (1 - acc), "accuracy": 100.0 * acc}


class Rating(Task):
    name = "rating"
    metrics = (Metric("mae", True), Metric("mse", True), Metric("rmse", True))
    primary = "mae"
    primary_outcome = ("abs_err", 1.0)

    def loss(self, out, batch):
        return F.mse_loss(out, batch["y"])

    def _errors(self, model, split, data, batch_size) -> Iterator[torch.Tensor]:
        """Prediction minus target on the original scale (standardisation undone),
        batch by batch."""
        mean = float(data.info.get("target_mean", 0.0))
        std = float(data.info.get("target_std", 1.0))
        for batch in split.batches(batch_size):
            batch = data.prepare(batch)
            pred = self.forward(model, batch).float() * std + mean
            yield pred - (batch["y"].float() * std + mean)

    @torch.no_grad()
    def outcomes(self, model, split, data, batch_size):
        was = model.training
        model.eval()
        diffs = list(self._errors(model, split, data, batch_size))
        model.train(was)
        d = _cat(diffs)
        return {"abs_err": np.abs(d), "sq_err": d * d}

    @torch.no_grad()
    def evaluate(self, model, split, data, batch_size):
        was = model.training
        model.eval()
        abs_sum, sq_sum, n = 0.0, 0.0, 0
        for diff in self._errors(model, split, data, batch_size):
            abs_sum += float(diff.abs().sum())
            sq_sum += float((diff * diff).sum())
            n += len(diff)
        model.train(was)
        mse = sq_sum / max(n, 1)
        return {"mae": abs_sum / max(n, 1), "mse": mse, "rmse": mse**0.5}


@runtime_checkable
class RankingModel(Protocol):
    """What a model of the ranking task provides (any nn.Module with these members).

    Batches are dicts of tensors with at least "user" [B] (ids from 1; 0 is padding)
    and whatever context the dataset gives (e.g. "seq", the items before this one).
    Items are numbered 1..n_items-1; column 0 of a score matrix is the padding item.

    n_items: the number of item ids including the padding id 0.
    train_split: the split it trains on: "train" (one row per training interaction:
      "user", "item", "seq") or "users" (one row per user, e.g. auto-encoders).
    forward(batch) -> [B, n_items]: scores of every item for the batch's users (higher
      ranks first; logits, not probabilities, so that nothing saturates into ties).
    score(batch, items) -> [B, K]: scores of the given items [B, K], differentiable.
    cf_loss(batch) -> scalar: the model's own training loss on a training batch
      (drawing any negatives it needs from torch's global generator).

    Optionally, encode(batch) -> state: the part of a training step's forward pass that
    every loss of the step shares (e.g. the users' representations, made with one draw
    of the input corruption). When a model has it, the task calls `cf_loss(batch,
    state)` and hands the state to distillers as `Step.student_out`, which pass it on
    as `score(batch, items, state)`: one forward pass per step, as a paper's code that
    scores all of a step's items at once.
    """

    n_items: int
    train_split: str

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def score(self, batch: dict[str, torch.Tensor], items: torch.Tensor) -> torch.Tensor: ...

    def cf_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


#: the cut-offs of the ranking metrics (50 is the CD paper's; 10 is DE-RRD's)
RANKING_KS = (50, 10)


def rank_of_target(scores: torch.Tensor, target: torch.Tensor, exclude: list[torch.Tensor]) -> torch.Tensor:
    """0-based rank of each row's target item among the candidates.

    scores [B, N]; target [B]; exclude: index tensors [B, *] of items that are not
    candidates (the user's training items; padded with 0, the padding item, which is
    never a candidate). Ties with the target count against it (pessimistic), so a model
    that scores everything alike earns nothing; so does a NaN score of the target.
    """
    scores = scores.float()
    # a NaN score for the target ranks it last, never first (NaN compares False)
    t = torch.nan_to_num(scores.gather(1, target[:, None]), nan=float("-inf"))
    masked = scores.clone()
    for idx in exclude:
        masked.scatter_(1, idx, float("-inf"))
    masked[:, 0] = float("-inf")
    masked.scatter_(1, target[:, None], float("-inf"))  # the target is not its own rival
    return (masked >= t).sum(dim=1)


def hr_ndcg(ranks: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row HR@k (1 if the target is in the top k) and NDCG@k (1/log2(rank+2) with
    one relevant item, the ideal DCG being 1)."""
    hit = (ranks < k).float()
    return hit, hit / torch.log2(ranks.float() + 2.0)


class Ranking(Task):
    """Top-N recommendation, leave-one-out: each row of val/test holds one user's
    held-out item ("item"); every item the user has not interacted with in training is
    a candidate (the test also excludes the validation item: "seen")."""

    name = "ranking"
    metrics = tuple(Metric(f"{m}@{k}", False) for k in RANKING_KS for m in ("hr", "ndcg"))
    primary = f"ndcg@{RANKING_KS[0]}"
    primary_outcome = (f"ndcg@{RANKING_KS[0]}", 1.0)

    def forward(self, model, batch):
        return model(batch)

    def train_split(self, model):
        return getattr(model, "train_split", "train")

    def train_forward(self, model, batch):
        """The step's shared state (`encode`), or None; see RankingModel."""
        encode = getattr(model, "encode", None)
        return None if encode is None else encode(batch)

    def train_loss(self, model, batch, out):
        return model.cf_loss(batch) if out is None else model.cf_loss(batch, out)

    def loss(self, out, batch):  # models of this task compute their own (cf_loss)
        raise NotImplementedError("ranking models compute their own loss: cf_loss(batch)")

    def _ranks(self, model, split, data, batch_size) -> Iterator[torch.Tensor]:
        """The held-out item's rank for each row of `split`, batch by batch (the user's
        training items, and the test's validation item, excluded)."""
        history = data.split("history")["items"]
        for batch in split.batches(batch_size):
            batch = data.prepare(batch)
            exclude = [history.index_select(0, batch["user"])]
            if "seen" in batch:
                exclude.append(batch["seen"])
            yield rank_of_target(self.forward(model, batch), batch["item"], exclude)

    @torch.no_grad()
    def evaluate(self, model, split, data, batch_size):
        was = model.training
        model.eval()
        sums = {m.name: 0.0 for m in self.metrics}
        n = 0
        for ranks in self._ranks(model, split, data, batch_size):
            for k in RANKING_KS:
                hit, ndcg = hr_ndcg(ranks, k)
                sums[f"hr@{k}"] += float(hit.sum())
                sums[f"ndcg@{k}"] += float(ndcg.sum())
            n += len(ranks)
        model.train(was)
        return {k: v / max(n, 1) for k, v in sums.items()}

    @torch.no_grad()
    def outcomes(self, model, split, data, batch_size):
        """Per user (one row of the split each): HR@K and NDCG@K."""
        was = model.training
        model.eval()
        parts: dict[str, list[torch.Tensor]] = {m.name: [] for m in self.metrics}
        for ranks in self._ranks(model, split, data, batch_size):
            for k in RANKING_KS:
                hit, ndcg = hr_ndcg(ranks, k)
                parts[f"hr@{k}"].append(hit)
                parts[f"ndcg@{k}"].append(ndcg)
        model.train(was)
        return {k: _cat(v) for k, v in parts.items()}


TASK_OBJECTS: dict[str, Task] = {t.name: t for t in (Classification(), Rating(), Ranking())}


def get_task(name: str) -> Task:
    try:
        return TASK_OBJECTS[name]
    except KeyError:
        raise ValueError(f"the core has no trainer for the {name!r} task") from None
