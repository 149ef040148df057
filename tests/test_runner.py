"""The runner: determinism, the teacher cache, model selection, schedules, features,
size measures and the distillers' losses against hand computations."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.api import DataBundle, Step, TensorSplit
from harness.default_plugins import NoDistillation
from harness.grid import load_grid
from harness.plugins import get_registry
from harness.runner import (
    FeatureTap,
    RunOptions,
    lr_at,
    run_cell,
    teacher_key,
    train_model,
)
from harness.size import count_nonzero, flops_per_sample, measure_size, saved_bytes, sparse_bytes
from harness.tasks import get_task
from harness_distill.kd import KnowledgeDistillation


def cells(write_grid, **kw):
    return load_grid(write_grid(**kw), get_registry()).cells


@pytest.mark.slow
def test_same_cell_same_numbers_on_cpu(write_grid, tmp_path):
    cell = next(c for c in cells(write_grid, distillers="[kd]"))
    a = run_cell(cell.spec, "g", RunOptions(teacher_dir=str(tmp_path / "t1")))
    b = run_cell(cell.spec, "g", RunOptions(teacher_dir=str(tmp_path / "t2")))
    assert a["status"] == b["status"] == "ok", (a.get("error"), b.get("error"))
    assert a["metrics"] == b["metrics"]
    assert a["teacher_run"]["metrics"] == b["teacher_run"]["metrics"]
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


@pytest.mark.slow
def test_teacher_is_trained_once_and_reused_from_disk(write_grid, tmp_path):
    cell = next(c for c in cells(write_grid, distillers="[kd]"))
    opts = RunOptions(teacher_dir=str(tmp_path / "teachers"))
    first = run_cell(cell.spec, "g", opts)
    second = run_cell(cell.spec, "g", opts)
    assert first["teacher_run"]["cached"] is False
    assert second["teacher_run"]["cached"] is True
    assert first["teacher_run"]["metrics"] == second["teacher_run"]["metrics"]
    assert first["metrics"] == second["metrics"]  # same teacher, same student numbers
    assert len(list((tmp_path / "teachers").glob("*.pt"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip-a-byte", "bad-meta"])
def test_a_damaged_teacher_cache_heals_on_rerun(write_grid, tmp_path, monkeypatch, capsys, damage):
    """Must show: a truncated (or altered) cached teacher is moved aside with a warning
    naming it, retrained, and every cell ends ok."""
    import sqlite3

    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", "--grid", str(write_grid(distillers="[kd]")), "--out", "out"]) == 0
    (weights,) = (tmp_path / "out/teachers").glob("*.pt")
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip-a-byte":  # same size, so only the checksum can tell
        mid = len(data) // 2
        weights.write_bytes(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :])
    else:
        weights.with_suffix(".json").write_text('{"key": "trunc')
    capsys.readouterr()
    # a new cell that needs the same teacher (the teacher's key ignores the distiller)
    grid = write_grid(distillers="[kd, {name: kd, alpha: 0.5}]")
    assert main(["run", "--grid", str(grid), "--out", "out"]) == 0
    captured = capsys.readouterr()
    assert f"teacher cache {weights.relative_to(tmp_path)} could not be loaded" in captured.err
    assert "moved aside to" in captured.err and "retraining the teacher" in captured.err
    assert "1 ok, 0 failed" in captured.out
    assert len(list(weights.parent.glob(weights.name + ".bad-*"))) == 1
    db = sqlite3.connect(tmp_path / "out/results.db")
    assert db.execute("select status from cells").fetchall() == [("ok",), ("ok",)]
    assert weights.stat().st_size == len(data)  # retrained and cached again
    meta = __import__("json").loads(weights.with_suffix(".json").read_text())
    assert len(meta["weights_sha256"]) == 64


def test_teacher_key_ignores_the_students_method(write_grid):
    cs = cells(write_grid, distillers="[none, kd]")
    assert len({teacher_key(c.spec) for c in cs}) == 1
    other_seed = cells(write_grid, distillers="[kd]", seeds="[1]", filename="b.yaml")[0]
    assert teacher_key(other_seed.spec) != teacher_key(cs[0].spec)


def test_lr_steps_at_milestones():
    cfg = {"lr": 0.1, "gamma": 0.1, "milestones": [2, 4]}
    assert [round(lr_at(cfg, e), 6) for e in range(6)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def toy_data(n=256, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(n, generator=g)
    split = TensorSplit({"x": x, "y": y})
    return DataBundle(
        "rating",
        split,
        TensorSplit({"x": x[:64], "y": y[:64]}),
        split,
        info={"target_mean": 0.0, "target_std": 1.0},
    )


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 1)

    def forward(self, x):
        return self.body(x).squeeze(-1)

    def feature_layers(self):
        return [self.body]


TRAIN = {
    "optimizer": "sgd",
    "lr": 0.05,
    "weight_decay": 0.0,
    "momentum": 0.0,
    "nesterov": False,
    "milestones": [],
    "gamma": 0.1,
    "grad_clip": None,
}


def test_training_reduces_the_loss_and_nan_fails_the_cell():
    from harness.errors import CellError

    data, task = toy_data(), get_task("rating")
    torch.manual_seed(0)
    model, hist = Linear(), []
    before = task.evaluate(model, data.test, data, 512)["mse"]
    train_model(model, data, task, TRAIN, 5, 32, torch.Generator().manual_seed(0), history=hist)
    after = task.evaluate(model, data.test, data, 512)["mse"]
    assert after < 0.1 * before
    assert len(hist) == 5 and hist[-1]["loss"] < hist[0]["loss"]
    with pytest.raises(CellError, match="loss became nan in epoch 1"):
        train_model(model, data, task, dict(TRAIN, lr=float("nan")), 2, 32, torch.Generator().manual_seed(0))


def test_best_val_returns_the_best_epoch_not_the_last():
    data, task = toy_data(), get_task("rating")
    torch.manual_seed(0)
    model = Linear()
    train_model(model, data, task, TRAIN, 3, 32, torch.Generator().manual_seed(0))
    good = copy.deepcopy(model)

    def sabotage(m, epoch):  # after the first epoch is scored, wreck the model
        if epoch == 0:
            with torch.no_grad():
                m.body.weight.add_(10.0)

    hist = []
    best = train_model(
        model,
        data,
        task,
        dict(TRAIN, lr=1e-9),
        2,
        32,
        torch.Generator().manual_seed(0),
        select="best_val",
        on_epoch_end=sabotage,
        history=hist,
    )
    assert best is not model
    assert hist[1]["val_mae"] > 5 * hist[0]["val_mae"]
    assert torch.allclose(best.body.weight, good.body.weight, atol=1e-5)
    last = train_model(
        model, data, task, dict(TRAIN, lr=1e-9), 1, 32, torch.Generator().manual_seed(0), select="last"
    )
    assert last is model


def test_feature_tap_records_training_passes_only_and_copies_drop_it():
    from harness.runner import copy_model

    m = Linear()
    tap = FeatureTap(m)
    m(torch.randn(3, 4))  # e.g. an evaluation pass: not recorded
    assert tap.take() == []
    with tap.record():
        m(torch.randn(3, 4))
    feats = tap.take()
    assert len(feats) == 1 and feats[0].shape == (3, 1)
    clone = copy_model(m)
    with tap.record():
        clone(torch.randn(3, 4))  # a copy never feeds the original's tap
    assert tap.take() == []
    tap.close()
    with tap.record():
        m(torch.randn(3, 4))
    assert tap.take() == []


def test_kd_loss_by_hand():
    torch.manual_seed(0)
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 3])
    ce = F.cross_entropy(s, y)
    kd = KnowledgeDistillation(T=2.0, alpha=0.7)
    got = kd.loss(Step(batch={"y": y}, task="classification", student_out=s, task_loss=ce, teacher_out=t))
    p_t = torch.softmax(t / 2, dim=1)
    log_p_s = torch.log_softmax(s / 2, dim=1)
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(dim=1).mean()
    assert got.item() == pytest.approx((0.3 * ce + 0.7 * 4 * kl).item(), rel=1e-5)
    # ratings: the soft term is the distance to the teacher's prediction
    sr, tr = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])
    mse = torch.tensor(0.25)
    got = kd.loss(Step(batch={}, task="rating", student_out=sr, task_loss=mse, teacher_out=tr))
    assert got.item() == pytest.approx(0.3 * 0.25 + 0.7 * (1 + 4) / 2)
    assert NoDistillation().loss(Step(batch={}, task="rating", student_out=sr, task_loss=mse)).item() == 0.25


def test_kd_gradient_reaches_the_student_only():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    loss = KnowledgeDistillation(T=4.0, alpha=1.0).loss(
        Step(
            batch={},
            task="classification",
            student_out=s,
            task_loss=torch.tensor(0.0),
            teacher_out=t.detach(),
        )
    )
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_size_measures():
    m = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 1))
    x = torch.randn(1, 10)
    size = measure_size(m, lambda: m(x))
    assert size["params"] == 10 * 20 + 20 + 20 + 1 == size["nonzero_params"]
    assert size["flops"] == 2 * (10 * 20 + 20 * 1)  # 2 FLOPs per multiply-add
    assert size["sparse_bytes"] is None
    assert saved_bytes(m) > 4 * size["params"]
    with torch.no_grad():
        m[0].weight[:, :5] = 0  # half of the first layer
    assert count_nonzero(m) == size["params"] - 100
    assert sparse_bytes(m) < saved_bytes(m)
    assert flops_per_sample(lambda: m(torch.randn(8, 10)), n=8) == size["flops"]
    assert measure_size(m, lambda: m(x))["sparse_bytes"] is not None


def test_rating_metrics_undo_the_standardisation():
    class Const(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x))

    y = torch.tensor([1.0, -1.0, 2.0])  # standardised
    split = TensorSplit({"x": torch.zeros(3, 1), "y": y})
    data = DataBundle("rating", split, split, split, info={"target_mean": 6.0, "target_std": 2.0})
    m = get_task("rating").evaluate(Const(), split, data, 2)
    # errors on the original scale: 2, 2, 4
    assert m["mae"] == pytest.approx(8 / 3)
    assert m["mse"] == pytest.approx((4 + 4 + 16) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(8))


def test_classification_metrics():
    class Fixed(nn.Module):
        def forward(self, x):
            return x

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    split = TensorSplit({"x": x, "y": torch.tensor([0, 1, 1, 1])})
    data = DataBundle("classification", split, split, split)
    m = get_task("classification").evaluate(Fixed(), split, data, 3)
    assert m == {"top1_error": 50.0, "accuracy": 50.0}


def test_device_resolution_uses_cuda_when_present(monkeypatch):
    from harness.errors import UsageError
    from harness.runner import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(UsageError, match="CUDA is not available"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"


def test_bundles_move_every_split_to_the_device():
    data = toy_data()
    moved = data.to("meta")  # a device without storage: placement is checked, not compute
    for split in (moved.train, moved.val, moved.test):
        assert all(t.device.type == "meta" for t in split.tensors.values())
    assert moved.info is data.info and moved.task == data.task
