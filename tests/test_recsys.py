"""The recommender half: RecBole data and models, the ranking task, the ranking distillers.

Checked on ML-100K itself (shipped in RecBole's wheel) and on hand-made tiny cases.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from harness.api import DataBundle, Step
from harness.cli import main
from harness.errors import CellError, UsageError
from harness.plugins import get_registry
from harness.tasks import Ranking, get_task, hr_ndcg, rank_of_target
from harness_recsys import rb
from harness_recsys.data import AtomicDataset, MovieLens100K, leave_one_out, ranking_view
from harness_recsys.distillers import CD, CDSG, CDTG, DERRD, RD, RDRank
from harness_recsys.teacher import draw, rank_unobserved, rank_weights, teacher_view


def resolved(cls, **given):
    return cls(**cls.resolve_params(given, "test"))


@pytest.fixture(scope="module")
def ml100k() -> DataBundle:
    return resolved(MovieLens100K).load("ranking")


# --------------------------------------------------------------------------- data


def test_leave_one_out_holds_out_each_users_latest_interaction(ml100k):
    raw = pd.read_csv(rb.wheel_datasets() / "ml-100k" / "ml-100k.inter", sep="\t")
    raw.columns = [c.split(":")[0] for c in raw.columns]
    assert len(ml100k.test) == len(ml100k.val) == raw["user_id"].nunique() == 943
    assert len(ml100k.train) + 2 * 943 == len(raw) == 100_000
    assert len(set(ml100k.test["user"].tolist())) == 943  # one held-out item per user
    # RecBole remaps ids; map back through its dataset to compare with the raw file
    ds = ml100k.info["recbole_dataset"]
    users = ds.id2token(ds.uid_field, ml100k.test["user"].numpy())
    items = ds.id2token(ds.iid_field, ml100k.test["item"].numpy())
    val_items = ds.id2token(ds.iid_field, ml100k.val["item"].numpy())
    last = raw.sort_values("timestamp", kind="stable").groupby("user_id").tail(2)
    by_user = {u: g for u, g in last.groupby("user_id")}
    for u, i, v in zip(users[:200], items[:200], val_items[:200], strict=True):
        g = by_user[int(u)]
        assert int(i) == int(g["item_id"].iloc[-1])  # the latest is the test item
        assert int(v) == int(g["item_id"].iloc[-2])  # the one before validates
        t_latest = raw.loc[raw.user_id == int(u), "timestamp"].max()
        assert g["timestamp"].iloc[-1] == t_latest
    # no held-out item is among the user's training items
    hist = ml100k.extra["history"]["mask"]
    assert not hist[ml100k.test["user"], ml100k.test["item"]].any()
    assert not hist[ml100k.val["user"], ml100k.val["item"]].any()
    assert int(hist.sum()) == len(ml100k.train)


def test_leave_one_out_ties_keep_file_order_and_short_users_only_train():
    user = np.array([1, 1, 1, 2, 2, 3, 3, 3, 3])
    time = np.array([5, 5, 5, 1, 2, 9, 1, 3, 9])
    split, pos = leave_one_out(user, time)
    assert split.tolist() == [0, 1, 2, 0, 0, 1, 0, 0, 2]  # user 3: the later of the two 9s tests
    assert pos.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 3]


def test_sequences_hold_the_items_before_each_row():
    user = np.array([1, 1, 1, 1, 1])
    item = np.array([10, 11, 12, 13, 14])
    time = np.arange(5.0)
    train, val, test, extra, _ = ranking_view(user, item, time, n_users=2, n_items=15, length=3)
    assert train["seq"].tolist() == [[0, 0, 0], [0, 0, 10], [0, 10, 11]]
    assert val["seq"].tolist() == [[10, 11, 12]] and val["item"].tolist() == [13]
    assert test["seq"].tolist() == [[11, 12, 13]] and test["item"].tolist() == [14]
    assert test["seen"].tolist() == [[13]]
    assert extra["users"]["seq"].tolist() == [[10, 11, 12]]
    assert extra["history"]["items"][1].tolist() == [10, 11, 12]


def test_rating_view_gives_stars_back(ml100k):
    data = resolved(MovieLens100K).load("rating")
    assert (len(data.train), len(data.val), len(data.test)) == (80_000, 10_000, 10_000)
    stars = data.test["y"] * data.info["target_std"] + data.info["target_mean"]
    assert set(torch.round(stars).int().tolist()) <= {1, 2, 3, 4, 5}


def test_any_atomic_dataset_by_path(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(1, 5):
        rows += [f"u{u}\ti{(u + k) % 7}\t{k}" for k in range(4)]
    (folder / "toy.inter").write_text("\n".join(rows) + "\n")
    ds = resolved(AtomicDataset, path=str(folder), history_length=2)
    assert ds.missing() is None
    data = ds.load("ranking")
    assert data.info["n_users"] == 5 and len(data.test) == 4 and len(data.train) == 8
    with pytest.raises(UsageError, match="no rating column"):
        ds.load("rating")
    gone = resolved(AtomicDataset, path=str(tmp_path / "nothing"))
    assert "does not exist" in gone.missing()
    with pytest.raises(UsageError, match="needs the folder"):
        AtomicDataset.resolve_params({}, "grid.yaml:3: datasets[0]")


# --------------------------------------------------------------------------- metrics


def test_hr_and_ndcg_by_hand():
    ranks = torch.tensor([0, 1, 49, 50])
    hit, ndcg = hr_ndcg(ranks, 50)
    assert hit.tolist() == [1, 1, 1, 0]
    assert ndcg.tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(51), 0.0])
    hit10, _ = hr_ndcg(ranks, 10)
    assert hit10.tolist() == [1, 1, 0, 0]


def test_full_ranking_excludes_training_items_and_counts_ties_against_the_target():
    # item ids 1..6 (0 is padding); the target is item 4, scored 1.0
    scores = torch.tensor([[9.0, 8.0, 7.0, 0.5, 1.0, 0.5, 0.1]])
    target = torch.tensor([4])
    assert rank_of_target(scores, target, [torch.tensor([[0]])]).item() == 2  # items 1, 2 above
    assert rank_of_target(scores, target, [torch.tensor([[1, 2]])]).item() == 0  # trained on: not candidates
    scores[0, 6] = 1.0  # a tie counts against the target
    assert rank_of_target(scores, target, [torch.tensor([[1, 2]])]).item() == 1
    flat = torch.zeros(1, 7)
    assert rank_of_target(flat, target, [torch.tensor([[0]])]).item() == 5  # all alike: last
    flat[0, 4] = float("nan")
    assert rank_of_target(flat, target, [torch.tensor([[0]])]).item() >= 5  # NaN: never a hit


class TableModel(nn.Module):
    """A ranking model whose scores are a table (users × items): hand-set scores."""

    train_split = "train"

    def __init__(self, table: torch.Tensor, dim: int = 3) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone())
        self.n_items = table.shape[1]
        g = torch.Generator().manual_seed(dim)
        self.users = nn.Parameter(torch.randn(table.shape[0], dim, generator=g))
        self.items = nn.Parameter(torch.randn(table.shape[1], dim, generator=g))

    def forward(self, batch):
        return self.table[batch["user"]]

    def score(self, batch, items):
        return self.table[batch["user"]].gather(1, items)

    def cf_loss(self, batch):
        return self.table.sum() * 0

    def user_repr(self, batch):
        return self.users[batch["user"]]

    def item_repr(self, items):
        return self.items[items]


def tiny_bundle() -> DataBundle:
    """2 users, items 1..6. User 1 trains on 1, 2, 3, validates on 4, tests on 5; user 2
    trains on 4, 5, 6, validates on 1, tests on 2."""
    user = np.array([1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
    item = np.array([1, 2, 3, 4, 5, 4, 5, 6, 1, 2])
    time = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4], dtype=float)
    train, val, test, extra, _ = ranking_view(user, item, time, n_users=3, n_items=7, length=2)
    return DataBundle("ranking", train, val, test, {"n_items": 7, "fingerprint": "tiny"}, extra=extra)


def test_ranking_evaluate_by_hand():
    data = tiny_bundle()
    table = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 9, 9, 9, 1, 5, 3],  # user 1: test 5 beats 4 (val, excluded) and 6: rank 0
            [0, 2, 1, 9, 9, 9, 3],  # user 2: test 2 below 1 (val, excluded) and 3: rank 1
        ],
        dtype=torch.float,
    )
    m = TableModel(table)
    out = Ranking().evaluate(m, data.test, data, batch_size=1)
    assert out["hr@10"] == 1.0
    assert out["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    val = Ranking().evaluate(m, data.val, data, batch_size=2)  # user 1: 4 vs 5, 6 → rank 2
    assert val["ndcg@50"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(2 + 0 + 1)) / 2)


# --------------------------------------------------------------------------- samplers


def test_rank_aware_sampler_follows_its_formula():
    n = 10
    rank = torch.arange(1, n + 1)[None, :].repeat(20000, 1)
    counts = torch.tensor([n]).repeat(20000)
    for law, gamma in (("linear", 1.0), ("exponential", 3.0)):
        torch.manual_seed(0)
        w = rank_weights(rank, counts, law, gamma)
        first, valid = draw(w, 1)
        assert valid.all()
        freq = torch.bincount(first[:, 0], minlength=n).float() / len(first)
        pi = torch.arange(1, n + 1).float() / n
        p = (1 - pi) if law == "linear" else torch.exp(-gamma * pi)
        p = p / p.sum()
        assert freq.tolist() == pytest.approx(p.tolist(), abs=0.012)
    # without replacement, and never an item that is not a candidate
    w = rank_weights(torch.tensor([[0, 1, 2, 0, 3]]), torch.tensor([3]), "uniform")
    items, valid = draw(w, 5)
    assert sorted(items[0][valid[0]].tolist()) == [1, 2, 4] and valid.sum() == 3


def test_ranks_among_unobserved_items():
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 2.0]])
    trained = torch.tensor([[False, False, True, False, False]])
    order, rank, n = rank_unobserved(scores, trained)
    assert rank.tolist() == [[0, 1, 0, 2, 3]] and n.tolist() == [3]
    assert order[0, :3].tolist() == [1, 3, 4]


# --------------------------------------------------------------------------- distillers


def setup_distiller(cls, teacher_table, student_table, **hp):
    data = tiny_bundle()
    d = resolved(cls, **hp)
    teacher, student = TableModel(teacher_table, 4), TableModel(student_table, 3)
    extra = list(d.setup(teacher, student, data, data.train.head(2)))
    batch = data.split("users").head(2)
    return d, teacher, student, batch, extra


def step_for(batch, student, teacher, epoch=0, task_loss=1.0):
    return Step(
        batch=batch,
        task="ranking",
        student_out=None,
        task_loss=torch.tensor(task_loss),
        epoch=epoch,
        student=student,
        teacher=teacher,
    )


T_TABLE = torch.tensor(
    [[0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 3, 2, 1], [0, 3, 2, 1, 0, 0, 0]], dtype=torch.float
)
S_TABLE = torch.tensor(
    [[0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0.5, -0.5, 0.2], [0, 0.1, -1, 0.3, 1, 1, 1]], dtype=torch.float
)


def test_teacher_view_is_computed_once_per_teacher():
    data = tiny_bundle()
    t = TableModel(T_TABLE)
    a, b = teacher_view(t, data), teacher_view(t, data)
    assert a is b
    # user 1 trained on 1, 2, 3 (-inf); unobserved 4, 5, 6 ranked by the teacher
    assert a.rank[1].tolist() == [0, 0, 0, 0, 1, 2, 3]
    assert a.order[2, :3].tolist() == [1, 2, 3]
    with torch.no_grad():
        t.table[1, 6] = 10.0
    assert teacher_view(t, data) is not a


def test_rd_loss_by_hand():
    d, t, s, batch, _ = setup_distiller(RD, T_TABLE, S_TABLE, K=2, rho=0.5, lambda_=1.0, dynamic_start=99)
    loss = d.loss(step_for(batch, s, t, task_loss=2.0))
    w = torch.tensor([math.exp(-1), math.exp(-2)])
    w = w / w.sum()
    sig = torch.nn.functional.logsigmoid
    # user 1: teacher's top 2 of {4, 5, 6} are 4, 5; user 2: of {1, 2, 3} are 1, 2
    u1 = -(w[0] * sig(torch.tensor(0.5)) + w[1] * sig(torch.tensor(-0.5)))
    u2 = -(w[0] * sig(torch.tensor(0.1)) + w[1] * sig(torch.tensor(-1.0)))
    assert loss.item() == pytest.approx(0.5 * 2.0 + 0.5 * float(u1 + u2) / 2, rel=1e-6)


def test_rd_dynamic_weight_favours_items_the_student_ranks_too_low():
    student = S_TABLE.clone()
    student[1, 4:] = torch.tensor([-2.0, 1.0, 0.5])  # the teacher's first (4) is the student's last
    d, t, s, batch, _ = setup_distiller(
        RD, T_TABLE, student, K=3, rho=1.0, dynamic_start=0, mu=10.0, n_estimate=3000
    )
    torch.manual_seed(0)
    loss = d.loss(step_for(batch, s, t, epoch=1))  # (the official code: after dynamic_start)
    loss.backward()
    g = s.table.grad
    # user 1, ranks estimated as the official code does, r̂ = ⌊(|I| − 1)·share⌋ with |I| = 6
    # items and the share of 3000 uniform draws of its 3 unobserved items scored above:
    # r̂(4) = ⌊5·(≈2/3)⌋ = 3 > r = 0, so item 4 gets weight tanh(30); items 5 (r̂ 0, r 1)
    # and 6 (r̂ ⌊5·(≈1/3)⌋ = 1, r 2) are ranked no lower than the teacher asks: weight 0
    assert g[1, 4] < 0 and g[1, 5] == 0 and g[1, 6] == 0


def test_rd_rank_with_every_item_drawn_is_rd_on_every_item():
    # (eq. 9's weighted draw with the exponential law: every candidate has a weight,
    # so K = |I_u^-| draws all of them; the linear one gives the last item 1 - 3/3 = 0)
    d, t, s, batch, _ = setup_distiller(
        RDRank, T_TABLE, S_TABLE, K=3, dynamic_start=99, law="exponential", sampler="weighted"
    )
    r, _, _, _, _ = setup_distiller(RD, T_TABLE, S_TABLE, K=3, dynamic_start=99)
    assert d.loss(step_for(batch, s, t)).item() == pytest.approx(r.loss(step_for(batch, s, t)).item())


def test_cd_loss_by_hand():
    # K = all 3 unobserved items: the sampled set is certain for eq. 9's weighted draw
    # (with the exponential law: the linear one never draws the last item, weight 1 - 3/3);
    # Algorithm 1 is tested on its own below
    for cls in (CD, CDTG, CDSG):
        d, t, s, batch, _ = setup_distiller(
            cls,
            T_TABLE,
            S_TABLE,
            sample_size=3,
            T1=2.0,
            T2=1.0,
            lambda_=0.5,
            law="exponential",
            sampler="weighted",
        )
        loss = d.loss(step_for(batch, s, t, task_loss=100.0))
        sig = torch.sigmoid
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        total = 0.0
        for u, pos, unobs in ((1, [1, 2, 3], [4, 5, 6]), (2, [4, 5, 6], [1, 2, 3])):
            cf = -sum(math.log(sig(S_TABLE[u, i]).item()) for i in pos)  # selective: positives only
            q = sig((T_TABLE[u, unobs] + 1.0) / 2.0)
            kd = bce(S_TABLE[u, unobs], q, reduction="sum").item()
            total += cf + 0.5 * kd
        assert loss.item() == pytest.approx(total / 2, rel=1e-5), cls.name


def test_cd_sample_ratio_gives_each_user_its_own_k():
    d, t, s, batch, _ = setup_distiller(CD, T_TABLE, S_TABLE, sample_ratio=0.34)
    assert d.sample_sizes(batch["user"]).tolist() == [2, 2]  # ceil(0.34 * 3)


def test_cd_sample_ratio_reads_the_unobserved_items_by_default(ml100k):
    """Fig. 8 of the CD paper: δ × |I_u^-| items; `ratio_of: observed` reads |I_u^+|."""
    mask = ml100k.split("history")["mask"]
    users = torch.tensor([1, 2, 3])
    n_pos = mask[users].sum(1)
    n_neg = mask.shape[1] - 1 - n_pos
    for ratio_of, base in (("unobserved", n_neg), ("observed", n_pos)):
        d = resolved(CD, sample_ratio=0.8, ratio_of=ratio_of)
        d.trained = mask
        assert d.sample_sizes(users).tolist() == torch.ceil(0.8 * base.float()).long().tolist()


def test_rrd_loss_by_hand():
    # N_max 2 and K 2: the interesting items are the teacher's top 2, in its order; the
    # uninteresting one is the rest (L 1)
    d, t, s, batch, extra = setup_distiller(
        DERRD, T_TABLE, S_TABLE, use_de=False, K=2, L=1, n_max=2, T=1.0, lambda_rrd=1.0
    )
    assert extra  # the experts are trained with the student
    loss = d.loss(step_for(batch, s, t, task_loss=0.0))
    total = 0.0
    for u, (i1, i2), j in ((1, (4, 5), 6), (2, (1, 2), 3)):
        s1, s2, sj = (S_TABLE[u, i].item() for i in (i1, i2, j))
        total += -(s1 - math.log(math.exp(s1) + math.exp(s2) + math.exp(sj)))
        total += -(s2 - math.log(math.exp(s2) + math.exp(sj)))
    assert loss.item() == pytest.approx(total / 2, rel=1e-6)


def test_de_loss_by_hand_with_one_expert():
    d, t, s, batch, extra = setup_distiller(
        DERRD, T_TABLE, S_TABLE, use_rrd=False, n_experts=1, lambda_de=1.0
    )
    torch.manual_seed(3)
    loss = d.loss(step_for(batch, s, t, task_loss=0.0))
    torch.manual_seed(3)  # the same uniformly drawn items
    items = torch.randint(1, 7, (2,))
    e_u, e_i = d.user_experts, d.item_experts

    def expert(e, x):
        h = torch.relu(x @ e.w1[0] + e.b1[0])
        return h @ e.w2[0] + e.b2[0]

    u = batch["user"]
    de = ((t.users[u] - expert(e_u, s.users[u])) ** 2).sum(1).mean()
    de = de + ((t.items[items] - expert(e_i, s.items[items])) ** 2).sum(1).mean()
    assert loss.item() == pytest.approx(de.item(), rel=1e-5)


def test_de_rrd_needs_two_tower_models():
    data = tiny_bundle()

    class NoRepr(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, batch):
            return T_TABLE[batch["user"]] + self.w

    d = resolved(DERRD)
    with pytest.raises(CellError, match="no user/item representations"):
        d.setup(NoRepr(), NoRepr(), data, data.train.head(1))


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", ["bpr", "cdae", "caser", "neumf"])
def test_recbole_models_score_train_and_negatives(name, ml100k):
    cls = get_registry().get("model", name)
    torch.manual_seed(0)
    m = cls(**cls.resolve_params(cls.presets["student"], "test")).build(ml100k)
    batch = ml100k.split(m.train_split).head(32)
    loss = m.cf_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    m.eval()
    rows = ml100k.test.head(5)
    full = m(rows)
    assert full.shape == (5, ml100k.info["n_items"])
    items = torch.randint(1, ml100k.info["n_items"], (5, 7))
    assert torch.allclose(m.score(rows, items), full.gather(1, items), atol=1e-5)  # (eval: no dropout)
    neg = m.negatives(ml100k.train["user"][:2000], 3)
    assert not ml100k.extra["history"]["mask"][ml100k.train["user"][:2000, None], neg].any()


def test_recbole_leaves_autograd_anomaly_detection_off(ml100k):
    # importing RecBole's models runs set_detect_anomaly(True) (its sine.py): undone
    for name in ("bpr", "cdae", "caser", "neumf"):
        cls = get_registry().get("model", name)
        cls(**cls.resolve_params({}, "t")).build(ml100k)
    import recbole.model.sequential_recommender  # noqa: F401  (already imported: a no-op)

    assert not torch.is_anomaly_enabled()


def test_model_sizes_follow_the_grid():
    data = resolved(MovieLens100K).load("ranking")
    reg = get_registry()

    def params(name, **hp):
        cls = reg.get("model", name)
        return sum(p.numel() for p in cls(**cls.resolve_params(hp, "t")).build(data).parameters())

    # CDAE: user embedding, item input layer, output layer (944 users, 1683 items)
    assert params("cdae", embedding_size=100) == 944 * 100 + 1683 * 100 + 100 + 100 * 1683 + 1683
    assert params("cdae", embedding_size=10) == 944 * 10 + 1683 * 10 + 10 + 10 * 1683 + 1683
    assert params("bpr", embedding_size=20) == (944 + 1683) * 20
    with pytest.raises(UsageError, match="history_length"):
        reg.get("model", "caser")(**reg.get("model", "caser").resolve_params({"L": 50}, "t")).build(data)


def test_neumf_rates_and_exposes_its_tower():
    data = resolved(MovieLens100K).load("rating")
    cls = get_registry().get("model", "neumf")
    m = cls(**cls.resolve_params(cls.presets["student"], "t")).build(data)
    out = m(data.test.head(4)["x"])
    assert out.shape == (4,)
    assert [layer.out_features for layer in m.feature_layers()] == [16, 8]


# --------------------------------------------------------------------------- grids


TINY_RANKING = """
name: tiny-rank
datasets: [{{name: movielens-100k, task: ranking}}]
teacher: {{model: {model}, embedding_size: 16}}
student: {{model: {model}, embedding_size: 4}}
distillers: [none, rd, rd-rank, cd-base, cd-tg, cd-sg, de-rrd, kd]
seeds: [0]
budget: {{epochs: 1, teacher_epochs: 2, batch_size: {bs}, eval_batch_size: 1024}}
train: {{optimizer: adam, lr: 0.01}}
energy: {{inference_min_seconds: 0.0}}
"""


def test_tiny_ranking_grid_end_to_end(write_grid, tmp_path, capsys):
    grid = write_grid(TINY_RANKING.format(model="cdae", bs=512))
    assert main(["run", "--grid", str(grid), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "7 ok, 0 failed" in out and "1 skipped" in out
    md = (tmp_path / "r/leaderboards/movielens-100k__ranking.md").read_text()
    for label in (
        "Teacher (",
        "| CDAE ",
        "| RD ",
        "| RD-Rank ",
        "| CD-Base ",
        "| CD-TG ",
        "| CD-SG ",
        "| DE-RRD ",
    ):
        assert label in md, label
    wide = md.split("## Every column")[1].splitlines()  # the whole table
    header = next(line for line in wide if line.startswith("| Method"))
    for col in ("HR@50", "NDCG@50", "Params", "Train J"):
        assert col in header
    assert "KD: distiller 'kd' does not support the ranking task" in md


def test_rating_view_with_sad_and_kd(write_grid, tmp_path, capsys):
    grid = write_grid(
        """
        datasets: [{name: movielens-100k, task: rating}]
        teacher: {model: neumf, preset: teacher}
        student: {model: neumf, preset: student}
        distillers: [none, kd, sad, cd-tg]
        seeds: [0]
        budget: {epochs: 1, teacher_epochs: 1, batch_size: 4096}
        energy: {inference_min_seconds: 0.0}
        """
    )
    assert main(["run", "--grid", str(grid), "--out", str(tmp_path / "r")]) == 0
    assert "3 ok, 0 failed" in capsys.readouterr().out
    md = (tmp_path / "r/leaderboards/movielens-100k__rating.md").read_text()
    for label in ("| NeuMF ", "| KD ", "| SAD "):
        assert label in md
    assert "CD-TG: distiller 'cd-tg' does not support the rating task" in md


def test_pairs_sections_model_overrides_and_published_figures(write_grid, tmp_path, capsys):
    from harness.grid import load_grid

    text = """
    name: cdx
    datasets: [{name: movielens-100k, task: ranking}]
    teacher: [{model: cdae, embedding_size: 8}, {model: bpr, embedding_size: 8}]
    student: [{model: cdae, embedding_size: 2}, {model: bpr, embedding_size: 2}]
    pairs: zip
    distillers: [none, rd]
    budget: {epochs: 1, teacher_epochs: 1, batch_size: 4096}
    energy: {inference_min_seconds: 0.0}
    overrides:
      cdae:
        budget: {batch_size: 512}
        train: {optimizer: adagrad, lr: 0.2}
        hparams: {rd: {K: 15}}
    published:
      - source: "A paper, Table 1"
        dataset: movielens-100k
        rows:
          - {method: RD, model: cdae, hr@50: 0.3578}
          - {method: Teacher, model: bpr, ndcg@50: 0.1}
    sections:
      cpu:
        seeds: [0, 1]
        overrides: {bpr: {train: {lr: 0.05}}}
    """
    grid = load_grid(write_grid(text), get_registry())
    assert len(grid.cells) == 4  # zip: 2 pairs × 2 distillers
    cdae_rd = next(
        c.config
        for c in grid.cells
        if c.config["student"]["model"] == "cdae" and c.config["distiller"]["name"] == "rd"
    )
    assert cdae_rd["distiller"]["params"]["K"] == 15 and cdae_rd["budget"]["batch_size"] == 512
    assert cdae_rd["train"]["optimizer"] == "adagrad" and cdae_rd["teacher_train"]["optimizer"] == "adagrad"
    bpr_rd = next(
        c.config
        for c in grid.cells
        if c.config["student"]["model"] == "bpr" and c.config["distiller"]["name"] == "rd"
    )
    assert bpr_rd["distiller"]["params"]["K"] == 10 and bpr_rd["budget"]["batch_size"] == 4096
    cpu = load_grid(write_grid(text), get_registry(), "cpu")
    assert cpu.name == "cdx-cpu" and len(cpu.cells) == 8
    assert {c.config["train"]["lr"] for c in cpu.cells if c.config["student"]["model"] == "bpr"} == {0.05}
    with pytest.raises(UsageError, match=r"no section 'gpu'"):
        load_grid(write_grid(text), get_registry(), "gpu")
    bad = text.replace("hparams: {rd: {K: 15}}", "hparams: {rd: {K: 'many'}}")
    with pytest.raises(UsageError, match=r"grid.yaml:\d+: overrides.cdae.hparams.rd.*expected int"):
        load_grid(write_grid(bad), get_registry())
    bad = text.replace("pairs: zip", "pairs: zip\n    seeds: 1").replace(
        "student: [{model: cdae, embedding_size: 2}, {model: bpr, embedding_size: 2}]",
        "student: [{model: cdae, embedding_size: 2}]",
    )
    with pytest.raises(UsageError, match="zip pairs the i-th teacher"):
        load_grid(write_grid(bad), get_registry())

    assert main(["run", "--grid", str(write_grid(text)), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r/leaderboards/movielens-100k__ranking.md").read_text()
    wide = md.split("## Every column")[1].splitlines()  # the whole table
    row = next(line for line in wide if line.startswith("| RD(K=15)"))
    assert "HR@50 0.3578 [1]" in row
    teacher = next(line for line in wide if line.startswith("| Teacher (bpr"))
    assert "NDCG@50 0.1 [1]" in teacher
    assert "[1] A paper, Table 1" in md


def test_unstructured_pruning_reaches_embeddings(ml100k):
    from harness_prune.structure import UnstructuredMasks

    cls = get_registry().get("model", "bpr")
    m = cls(**cls.resolve_params({"embedding_size": 8}, "t")).build(ml100k)
    masks = UnstructuredMasks(m)
    assert masks.targets == ["net.user_embedding", "net.item_embedding"]
    masks.prune(m, 0.5)
    with torch.no_grad():
        m(ml100k.test.head(1))  # the masks apply on the forward pass
    assert masks.removed_fraction == pytest.approx(0.5, abs=1e-3)
    assert float((m.net.item_embedding.weight == 0).float().mean()) > 0.3
    assert "unstructured" in cls.prunable and "structured" not in cls.prunable


@pytest.mark.parametrize("task", ["ranking", "rating"])
def test_neumf_shrinks_its_mlp_and_keeps_its_outputs(task, ml100k):
    from harness_prune.pruners import model_input
    from harness_prune.structure import StructuredMasks

    data = ml100k if task == "ranking" else resolved(MovieLens100K).load("rating")
    cls = get_registry().get("model", "neumf")
    m = cls(**cls.resolve_params(cls.presets["teacher"], "t")).build(data).eval()
    example = model_input(data.test.head(8))
    masks = StructuredMasks(m, example)
    assert sorted(g.n for g in masks.groups) == [64, 128]  # the MLP's hidden units, not the output
    masks.prune(m, 0.5)
    with torch.no_grad():
        masked = m(example)
    small = masks.shrink(m)  # (traces with autograd)
    with torch.no_grad():
        assert torch.allclose(small(example), masked, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in m.parameters())


def test_cd_ml100k_grid_and_its_sections_load():
    from harness.grid import load_grid

    root = Path(__file__).resolve().parents[1]
    # (cpu adds RD, RD-Rank and DE-RRD at weights chosen on validation)
    counts = {None: 2 * 9 * 5, "cpu": 12 * 5, "cpu-caser": 9 * 3, "paper": 2 * 9 * 5}
    for section, n in counts.items():
        grid = load_grid(root / "grids/cd-ml100k.yaml", get_registry(), section)
        assert len(grid.runnable) == n, section
        methods = {c.config["distiller"]["name"] for c in grid.cells}
        assert methods == {"none", "rd", "rd-rank", "cd-base", "cd-tg", "cd-sg", "de-rrd"}
        cdae = [c.config for c in grid.cells if c.config["student"]["model"] == "cdae"]
        assert all(c["teacher"]["params"]["embedding_size"] == 100 for c in cdae)
        assert all(c["student"]["params"]["embedding_size"] == 10 for c in cdae)
        # the validated regime, and the paper's own (Adagrad, sampled negatives) as a section
        want = "adagrad" if section == "paper" else "adam"
        assert {c["train"]["optimizer"] for c in cdae} <= {want}
        if section == "paper":
            assert {c["student"]["params"]["train_loss"] for c in cdae} == {"sampled"}
        cd = [c for c in cdae if c["distiller"]["name"].startswith("cd-")]
        assert all(c["distiller"]["params"]["ratio_of"] == "unobserved" for c in cd)
        assert all(c["distiller"]["params"]["sampler"] == "algorithm1" for c in cd)
    assert len(grid.published[0]["rows"]) == 14


def test_task_registry_knows_ranking():
    assert isinstance(get_task("ranking"), Ranking)
    assert Ranking.primary == "ndcg@50"


def test_datasets_command_lists_movielens_and_the_path_dataset(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("movielens-100k"))
    assert " yes " in line and "ml-100k.inter" in line
    assert "recbole-atomic needs the folder" in out
