"""Tasks: how the core calls a model, computes the task loss and scores predictions.

classification: logits [B, C], cross-entropy; metric top-1 error (and accuracy).
rating: predictions [B] on the standardised target, MSE; metrics MAE, MSE, RMSE on the
  original scale (undoing the dataset's target_mean/target_std).
ranking: left to the recommender issue's plugins (models with their own scoring).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

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

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["x"])

    @abstractmethod
    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The task's training loss of the model's output on a batch."""

    @abstractmethod
    def evaluate(
        self, model: nn.Module, split: TensorSplit, data: DataBundle, batch_size: int
    ) -> dict[str, float]:
        """The task's metrics of `model` on `split` (eval mode, no gradients)."""


class Classification(Task):
    name = "classification"
    metrics = (Metric("top1_error", True), Metric("accuracy", False))
    primary = "top1_error"

    def loss(self, out, batch):
        return F.cross_entropy(out, batch["y"])

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

    def loss(self, out, batch):
        return F.mse_loss(out, batch["y"])

    @torch.no_grad()
    def evaluate(self, model, split, data, batch_size):
        was = model.training
        model.eval()
        mean = float(data.info.get("target_mean", 0.0))
        std = float(data.info.get("target_std", 1.0))
        abs_sum, sq_sum, n = 0.0, 0.0, 0
        for batch in split.batches(batch_size):
            batch = data.prepare(batch)
            pred = self.forward(model, batch).float() * std + mean
            true = batch["y"].float() * std + mean
            diff = pred - true
            abs_sum += float(diff.abs().sum())
            sq_sum += float((diff * diff).sum())
            n += len(diff)
        model.train(was)
        mse = sq_sum / max(n, 1)
        return {"mae": abs_sum / max(n, 1), "mse": mse, "rmse": mse**0.5}


TASK_OBJECTS: dict[str, Task] = {t.name: t for t in (Classification(), Rating())}


def get_task(name: str) -> Task:
    try:
        return TASK_OBJECTS[name]
    except KeyError:
        raise ValueError(f"the core has no trainer for the {name!r} task yet") from None
