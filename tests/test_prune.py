"""Pruning: masked and shrunk models agree, rewinding is exact, rates give the sizes they
should, the winning ticket is chosen as documented, and every pruner composes with the
distillers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from harness.cli import main
from harness.size import count_nonzero, count_parameters
from harness_movies.dcnn import DCNN
from harness_prune.structure import StructuredMasks, UnstructuredMasks, rewind, snapshot
from harness_vision.wrn import WideResNet

ROOT = Path(__file__).resolve().parents[1]


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 1))


def warm(model: nn.Module, x: torch.Tensor) -> None:
    """Give batch norms non-trivial running statistics."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x + torch.randn_like(x))


@pytest.mark.parametrize("name", ["wrn", "dcnn", "mlp"])
def test_shrunk_model_gives_the_masked_models_outputs(name):
    torch.manual_seed(0)
    model, x = {
        "wrn": (WideResNet(16, 2, 100), torch.randn(8, 3, 32, 32)),
        "dcnn": (DCNN(37, [8, 16, 32], 3, 32, 0.1), torch.randn(8, 37)),
        "mlp": (
            nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 1)),
            torch.randn(8, 10),
        ),
    }[name]
    warm(model, x)
    masks = StructuredMasks(model, x[:2])
    for _ in range(3):
        masks.prune(model, 0.3)
        warm(model, x)  # training goes on between events
    model.eval()
    small = masks.shrink(model).eval()
    assert count_parameters(small) < 0.5 * count_parameters(model)
    with torch.no_grad():
        y = torch.randn_like(x)
        assert torch.allclose(model(y), small(y), atol=1e-5)


def test_rates_give_the_channel_counts_they_should():
    torch.manual_seed(0)
    model, x = mlp(), torch.randn(4, 10)
    masks = StructuredMasks(model, x)
    assert [g.n for g in masks.groups] == [20]  # the output layer is never pruned
    masks.prune(model, 0.5)  # 20 -> 10 hidden units
    assert count_parameters(masks.shrink(model)) == 10 * 10 + 10 + 10 + 1
    masks.prune(model, 0.5)  # 10 -> 5
    assert count_parameters(masks.shrink(model)) == 5 * 10 + 5 + 5 + 1
    masks.prune(model, 0.99)  # at least one unit survives
    assert masks.groups[0].alive == masks.groups[0].alive[:1] and len(masks.groups[0].alive) == 1


def test_l1_importance_removes_the_weakest_units():
    model, x = mlp(), torch.randn(4, 10)
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(20, dtype=torch.float).repeat(10, 1).t() + 1)
    masks = StructuredMasks(model, x)
    masks.prune(model, 0.25)
    assert masks.groups[0].pruned == {0, 1, 2, 3, 4}  # the five smallest L1 norms


def test_wrn_16_2_at_60_percent_of_channels_is_at_most_45_percent_of_its_parameters():
    torch.manual_seed(0)
    model, x = WideResNet(16, 2, 100), torch.randn(2, 3, 32, 32)
    masks = StructuredMasks(model, x)
    assert len(masks.groups) == 10
    masks.prune(model, 0.6)
    assert masks.removed_fraction == pytest.approx(0.6, abs=0.01)
    small = masks.shrink(model)
    assert count_parameters(small) <= 0.45 * 703_284
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert max(m.out_channels for m in convs) < 128  # physically narrower


def test_rewind_restores_the_initial_weights_exactly():
    torch.manual_seed(0)
    model, x = DCNN(20, [4, 8], 3, 8, 0.0), torch.randn(6, 20)
    theta0 = snapshot(model)
    masks = StructuredMasks(model, x)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        model(x).pow(2).mean().backward()
        opt.step()
    masks.prune(model, 0.5)
    rewind(model, theta0)
    state = model.state_dict()
    for key, value in theta0.items():
        stored = state.get(key + "_orig", state.get(key))
        assert torch.equal(stored, value), key
    # the masks survive the rewind: pruned channels stay silent
    stage = model.stages[0][0]
    pruned = sorted(next(g for g in masks.groups if "stages.0.0" in g.producers).pruned)
    assert pruned and torch.all(stage.weight[pruned] == 0)


def test_unstructured_masks_are_global_magnitude_and_keep_the_dense_shape():
    torch.manual_seed(0)
    model = mlp()
    masks = UnstructuredMasks(model)
    assert masks.targets == ["0"]  # the output layer is kept
    w = model[0].weight.detach().abs().flatten()
    masks.prune(model, 0.5)
    kept = model[0].weight.detach().flatten() != 0
    assert int(kept.sum()) == 100
    assert w[kept].min() >= w[~kept].max()  # the smallest magnitudes went
    masks.prune(model, 0.5)
    assert masks.removed_fraction == pytest.approx(0.75)
    small = masks.shrink(model)
    assert count_parameters(small) == count_parameters(mlp())
    assert count_nonzero(small) == count_parameters(small) - 150


def prune_grid(tmp_path: Path, **budget) -> Path:
    grid = yaml.safe_load((ROOT / "grids" / "prune-movies.yaml").read_text())
    grid["seeds"] = [0]
    grid["teacher"] = {"model": "dcnn", "channels": [8, 16], "hidden": 16}
    grid["student"] = {"model": "dcnn", "channels": [8, 16], "hidden": 16}
    grid["budget"].update(epochs=4, teacher_epochs=2, batch_size=512, **budget)
    grid["pruners"] = [
        "none",
        {"name": "sp", "rate": 0.3, "every": 1},
        {"name": "lth", "rate": 0.3, "every": 1, "tolerance": 1.0},
        {"name": "ss", "rate": 0.3, "every": 1, "rounds": 2, "tolerance": 1.0},
        {"name": "lth-u", "rate": 0.5, "every": 1, "tolerance": 1.0},
    ]
    grid["energy"] = {"inference_min_seconds": 0.0}
    grid["hparams"] = {k: grid["hparams"][k] for k in ("kd", "sad")}  # tolerances are set above
    path = tmp_path / "prune-movies.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.mark.slow
def test_every_pruner_composes_with_none_kd_and_sad(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--grid", str(prune_grid(tmp_path))]) == 0
    assert "15 ok, 0 failed" in capsys.readouterr().out
    db = sqlite3.connect(tmp_path / "runs/prune-movies/results.db")
    import json

    records = {
        (r["pruner"], r["distiller"]): r
        for r in (json.loads(x) for (x,) in db.execute("select record from cells"))
    }
    for dist in ("none", "kd", "sad"):
        # tolerance 1.0 MAE: the smallest level is the winner, so the model really shrank
        for pruner in ("lth", "ss"):
            r = records[(pruner, dist)]
            assert r["size"]["params"] < r["size"]["unpruned_params"], (pruner, dist)
            assert r["size"]["pct_of_unpruned"] < 100
            assert sum(1 for lv in r["levels"] if lv["winner"]) == 1
        assert records[("sp", dist)]["levels"][-1]["removed"] > 0.5
        u = records[("lth-u", dist)]
        assert u["size"]["params"] == u["size"]["unpruned_params"]  # dense shape kept
        assert u["size"]["nonzero_params"] < u["size"]["params"]
        assert u["size"]["sparse_bytes"] < u["size"]["bytes"]
    ss = records[("ss", "sad")]
    assert [lv.get("phase") for lv in ss["levels"]] == ["ticket search"] * 2 + ["distilled ticket"]
    md = (tmp_path / "runs/prune-movies/leaderboards/imdb-movies_features=categorical__rating.md").read_text()
    for label in (
        "| SP(rate=0.3,every=1)-SAD(alpha=0.5,beta=50.0) ",
        "| LTH(rate=0.3,every=1,tolerance=1.0)-KD(alpha=0.5) ",
        "| SS(rate=0.3,every=1,tolerance=1.0,rounds=2)-SAD(alpha=0.5,beta=50.0) ",
    ):
        assert label in md, label
    wide = md.split("## Every column")[1].splitlines()  # the whole table
    header = next(line for line in wide if line.startswith("| Method"))
    for col in ("MAE", "% teacher", "% student", "Train J", "Sparse KiB"):
        assert col in header
    assert "## Pruning levels" in md


def test_pruners_are_skipped_for_models_that_cannot_shrink(write_grid, tmp_path, register):
    from harness.api import ModelFactory
    from harness.grid import load_grid
    from harness.hookspecs import hookimpl
    from harness.plugins import get_registry

    class Rigid(ModelFactory):
        name = "rigid"
        tasks = frozenset({"rating"})

        def build(self, data):
            return nn.Linear(data.info["n_features"], 1)

    class P:
        @hookimpl
        def harness_register_models(self, register):
            register(Rigid)

    register(P(), "rigid")
    grid = load_grid(
        write_grid(
            text="""
        datasets: [imdb-movies]
        teacher: {model: dcnn}
        student: {model: rigid}
        distillers: [none]
        pruners: [none, sp, lth-u]
    """
        ),
        get_registry(),
    )
    reasons = sorted(c.skip or "runs" for c in grid.cells)
    assert reasons == [
        "pruner 'lth-u' is unstructured; student model 'rigid' supports no pruning",
        "pruner 'sp' is structured; student model 'rigid' supports no pruning",
        "runs",
    ]


class FakeFit:
    """Records how a pruner drives training (no data needed)."""

    def __init__(self, student, epochs, example, scores):
        self.student, self.epochs, self.example = student, epochs, example
        self.primary = ("mae", True)
        self.calls, self.levels, self.scores = [], [], list(scores)

    def train(self, model, epochs=None, distill=True, on_epoch_end=None, select=None, start_epoch=0):
        self.calls.append({"epochs": epochs, "distill": distill, "start_epoch": start_epoch})
        with torch.no_grad():  # "training" moves every weight
            for p in model.parameters():
                p.add_(0.01)
        return model

    def evaluate(self, model, split="val"):
        return {"mae": self.scores.pop(0)}

    def log_level(self, **values):
        self.levels.append(values)


@pytest.mark.parametrize("schedule, starts", [("restart", [0, 0, 0]), ("continue", [0, 4, 8])])
def test_lth_rounds_schedule_and_winner(schedule, starts):
    from harness_prune.pruners import LotteryTicket

    torch.manual_seed(0)
    fit = FakeFit(mlp(), 12, {"x": torch.randn(4, 10)}, scores=[0.9, 0.7, 0.8])
    pruner = LotteryTicket(
        **LotteryTicket.resolve_params({"rate": 0.5, "every": 4, "schedule": schedule}, "p")
    )
    model = pruner.fit(fit)
    assert [c["start_epoch"] for c in fit.calls] == starts
    assert all(c["epochs"] == 4 and c["distill"] for c in fit.calls)
    assert [lv["removed"] for lv in fit.levels] == [0.0, 0.5, 0.75]
    assert [lv["winner"] for lv in fit.levels] == [False, True, False]  # best val MAE 0.7
    assert count_parameters(model) == 10 * 10 + 10 + 10 + 1  # level 1: 10 of 20 units


def test_ss_searches_without_distillation_then_distils_the_ticket():
    from harness_prune.pruners import SparseStudent

    torch.manual_seed(0)
    fit = FakeFit(mlp(), 5, {"x": torch.randn(4, 10)}, scores=[0.9, 0.6, 0.8, 0.5])
    pruner = SparseStudent(**SparseStudent.resolve_params({"rate": 0.5, "every": 2, "rounds": 3}, "p"))
    model = pruner.fit(fit)
    assert [c["distill"] for c in fit.calls] == [False, False, False, True]
    assert fit.calls[-1]["epochs"] is None  # the distilled ticket trains for the budget
    assert [lv.get("phase") for lv in fit.levels] == ["ticket search"] * 3 + ["distilled ticket"]
    assert [lv.get("chosen_ticket", False) for lv in fit.levels] == [False, True, False, False]
    assert fit.levels[-1]["winner"] and fit.levels[-1]["removed"] == 0.5
    assert count_parameters(model) == 10 * 10 + 10 + 10 + 1


def test_round_to_keeps_multiples_of_eight_channels():
    from harness_prune.structure import rounds

    torch.manual_seed(0)
    model, x = WideResNet(16, 2, 100), torch.randn(2, 3, 32, 32)
    masks = StructuredMasks(model, x)
    masks.prune(model, 0.4, round_to=8)
    assert sorted(g.n for g in masks.groups if not rounds(g.n, 8)) == [16]  # the stem
    for g in masks.groups:
        if rounds(g.n, 8):
            assert len(g.alive) % 8 == 0 and len(g.alive) >= 8, (g.root, len(g.alive))
        else:  # too narrow to round: pruned as with round_to 1
            assert len(g.pruned) == round(0.4 * g.n), g.root
    small = masks.shrink(model)
    widths = {m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)}
    assert all(w % 8 == 0 for w in widths - {10})  # 10: the stem's 16 less 40%
    small.eval(), model.eval()
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5)


@pytest.mark.parametrize("rate, events", [(0.1, 8), (0.05, 10), (0.2, 4), (0.4, 1)])
def test_rounded_groups_follow_the_schedule_within_the_stated_bound(rate, events):
    """A rounded group keeps the multiple of 8 nearest n (1 - rate)^events: its removed
    fraction is within round_to / (2 n) <= MAX_ROUNDING_SHIFT of the schedule's, and a
    small rate still prunes (rounding each event's 10% of 32 would never move)."""
    from harness_prune.structure import MAX_ROUNDING_SHIFT, rounds

    torch.manual_seed(0)
    model, x = WideResNet(16, 2, 100), torch.randn(2, 3, 32, 32)
    masks = StructuredMasks(model, x)
    for _ in range(events):
        masks.prune(model, rate, round_to=8)
    asked = 1 - (1 - rate) ** events
    for g in (g for g in masks.groups if rounds(g.n, 8)):
        assert len(g.alive) % 8 == 0
        assert abs(len(g.pruned) / g.n - asked) <= 8 / (2 * g.n) <= MAX_ROUNDING_SHIFT, g.root
    assert abs(masks.removed_fraction - asked) <= MAX_ROUNDING_SHIFT
    assert masks.removed_fraction > 0


def test_round_to_1_prunes_as_before():
    """Without rounding each event removes round(rate * survivors) of every group (at
    least one channel survives), whatever the group's width: the pre-rounding law."""
    torch.manual_seed(0)
    model, x = WideResNet(16, 2, 100), torch.randn(2, 3, 32, 32)
    masks = StructuredMasks(model, x)
    expected = {g.root: g.n for g in masks.groups}
    for _ in range(6):
        masks.prune(model, 0.3, round_to=1)
        for g in masks.groups:
            alive = expected[g.root]
            expected[g.root] = alive - min(int(round(0.3 * alive)), alive - 1)
            assert len(g.alive) == expected[g.root], g.root
    assert any(n % 8 for n in expected.values())


def test_structured_pruners_round_to_8_by_default():
    from harness_prune.pruners import (
        LotteryTicket,
        LotteryTicketUnstructured,
        SparseStudent,
        StructuredPruning,
    )

    for cls in (StructuredPruning, LotteryTicket, SparseStudent):
        assert cls.resolve_params({}, "p")["round_to"] == 8
    assert "round_to" not in LotteryTicketUnstructured.resolve_params({}, "p")


def effective_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the forward uses: every parameter, masked where a pruning mask is set."""
    state = model.state_dict()
    out = {}
    for key, value in state.items():
        if key.endswith("_mask"):
            continue
        plain = key.removesuffix("_orig")
        mask = state.get(plain + "_mask")
        out[plain] = value * mask if mask is not None else value.clone()
    return out


class RecordingFit(FakeFit):
    """A FakeFit that keeps the weights each training call starts from."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.starts = []

    def train(self, model, **kwargs):
        self.starts.append(effective_weights(model))
        return super().train(model, **kwargs)


@pytest.mark.parametrize("name", ["lth", "lth-u", "ss"])
def test_ticket_rounds_restart_from_the_initial_weights(name):
    """Frankle & Carbin's rewinding in the composed flow: every round of LTH (and of SS's
    ticket search, and SS's distilled ticket) starts from θ₀ on the surviving weights,
    the pruned ones at zero, never from the previous round's trained values."""
    from harness.plugins import get_registry

    cls = get_registry().get("pruner", name)
    torch.manual_seed(0)
    student = mlp()
    theta0 = effective_weights(student)
    fit = RecordingFit(student, 6, {"x": torch.randn(4, 10)}, scores=[0.9, 0.7, 0.8, 0.6])
    given = {"rate": 0.5, "every": 2, **({"rounds": 3} if name == "ss" else {})}
    cls(**cls.resolve_params(given, "p")).fit(fit)
    assert len(fit.starts) >= 3
    for i, start in enumerate(fit.starts):
        for key, value in start.items():
            alive = value != 0
            assert torch.equal(value[alive], theta0[key][alive]), (i, key)  # survivors: θ₀
        if i > 0:  # later rounds: some weights pruned to zero
            assert sum(int((v == 0).sum()) for v in start.values()) > 0, i
