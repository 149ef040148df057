"""harness/tasks.py: per-example outcomes, whose means are the task's metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.api import DataBundle, TensorSplit
from harness.tasks import Classification, Ranking, Rating
from plugins.harness_recsys.data import ranking_view


def test_rating_outcomes_are_per_sample_errors_on_the_original_scale():
    class Linear(nn.Module):
        def forward(self, x):
            return x[:, 0]

    x = torch.tensor([[0.0], [1.0], [-1.0], [0.5], [2.0]])
    y = torch.tensor([1.0, -1.0, 2.0, 0.5, 0.0])
    split = TensorSplit({"x": x, "y": y})
    data = DataBundle("rating", split, split, split, info={"target_mean": 6.0, "target_std": 2.0})
    task = Rating()
    out = task.outcomes(Linear(), split, data, 2)
    np.testing.assert_allclose(out["abs_err"], [2.0, 4.0, 6.0, 0.0, 4.0])
    np.testing.assert_allclose(out["sq_err"], [4.0, 16.0, 36.0, 0.0, 16.0])
    m = task.evaluate(Linear(), split, data, 2)
    assert out["abs_err"].mean() == pytest.approx(m["mae"])
    assert out["sq_err"].mean() == pytest.approx(m["mse"])
    assert task.primary_outcome == ("abs_err", 1.0) and task.paired_test == "wilcoxon"


def test_classification_outcomes_are_per_image_correct():
    class Fixed(nn.Module):
        def forward(self, x):
            return x

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    split = TensorSplit({"x": x, "y": torch.tensor([0, 1, 1, 1])})
    data = DataBundle("classification", split, split, split)
    task = Classification()
    out = task.outcomes(Fixed(), split, data, 3)
    assert out["correct"].dtype == np.bool_
    assert out["correct"].tolist() == [True, True, False, False]
    name, scale = task.primary_outcome
    m = task.evaluate(Fixed(), split, data, 3)
    assert 100.0 + scale * out[name].mean() == pytest.approx(m["top1_error"])
    assert task.paired_test == "mcnemar"


class Table(nn.Module):
    """A ranking model whose scores are a fixed users × items table."""

    train_split = "train"

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)
        self.n_items = table.shape[1]

    def forward(self, batch):
        return self.table[batch["user"]]


def test_ranking_outcomes_are_per_user_hr_and_ndcg():
    # 2 users, items 1..6: user 1 trains on 1-3, validates on 4, tests on 5; user 2
    # trains on 4-6, validates on 1, tests on 2
    user = np.array([1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    item = np.array([1, 2, 3, 4, 5, 4, 5, 6, 1, 2])
    time = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4], dtype=float)
    train, val, test, extra, _ = ranking_view(user, item, time, n_users=3, n_items=7, length=2)
    data = DataBundle("ranking", train, val, test, {"n_items": 7}, extra=extra)
    table = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 9, 9, 9, 1, 5, 3],  # user 1: test item 5 ranks first among 5, 6
            [0, 2, 1, 9, 9, 9, 3],  # user 2: test item 2 below item 3: rank 1
        ],
        dtype=torch.float,
    )
    task = Ranking()
    out = task.outcomes(Table(table), data.test, data, 1)
    np.testing.assert_allclose(out["hr@10"], [1.0, 1.0])
    np.testing.assert_allclose(out["ndcg@10"], [1.0, 1 / np.log2(3)], rtol=1e-6)
    m = task.evaluate(Table(table), data.test, data, 2)
    for k, v in out.items():
        assert v.shape == (2,) and v.mean() == pytest.approx(m[k])
    assert task.primary_outcome == ("ndcg@50", 1.0)
