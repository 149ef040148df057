"""The laws of the ranking distillers, tested against references written here.

- Algorithm 1 of Lee et al. (ICDM 2019): its inclusion probabilities against an exact
  dynamic programme (Poisson-binomial up to the K-th acceptance), on a synthetic
  ranking of 1,000 items, within the binomial spread of the Monte-Carlo estimate.
- CD's loss in expectation over the sampler, on a hand-worked case.
- The reductions of RD, CD and DE-RRD (per instance and mean over the batch; sums over
  the batch's unique users for DE-RRD), on a real ML-100K batch.
- Caser's soft targets come from each instance's own context.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from harness.api import Step, TensorSplit
from harness.plugins import get_registry
from harness_recsys.data import MovieLens100K
from harness_recsys.distillers import CD, CDSG, CDTG, DERRD, RD, RDRank, Sample
from harness_recsys.teacher import algorithm1

from .test_recsys import S_TABLE, T_TABLE, TableModel, resolved, step_for, tiny_bundle


def inclusion_reference(p: np.ndarray, k: int) -> np.ndarray:
    """P(item at scan position i is in the sample) when position i is accepted with
    probability p[i] independently and the scan stops at the k-th acceptance:
    p[i] · P(fewer than k acceptances among positions < i), by dynamic programming
    over the count of acceptances (written independently of the code under test)."""
    count = np.zeros(k + 1)
    count[0] = 1.0  # distribution of acceptances so far, truncated at k
    out = np.empty(len(p))
    for i, pi in enumerate(p):
        out[i] = pi * count[:k].sum()
        new = count.copy()
        new[1 : k + 1] = count[1 : k + 1] * (1 - pi) + count[:k] * pi
        new[0] = count[0] * (1 - pi)
        new[k] = count[k] + count[k - 1] * pi  # the k-th stays (scan stopped)
        count = new
    return out


def empirical_inclusion(n: int, k: int, reps: int, law: str = "linear", gamma: float = 1.0) -> np.ndarray:
    torch.manual_seed(0)
    order = torch.arange(1, n + 1).repeat(reps, 1)  # item id = rank
    items, valid = algorithm1(order, torch.full((reps,), n), k, law, gamma)
    counts = torch.zeros(n + 1)
    counts.index_add_(0, items[valid], torch.ones(int(valid.sum())))
    return counts[1:].numpy() / reps


@pytest.mark.parametrize(
    "k, law, gamma",
    [(1000, "linear", 1.0), (50, "linear", 1.0), (85, "linear", 1.0), (100, "exponential", 3.0)],
)
def test_algorithm1_inclusion_probabilities_match_the_exact_law(k, law, gamma):
    n, reps = 1000, 4000
    ranks = np.arange(1, n + 1)
    # line 4/5: accept rank r when a uniform j on 1..n ranks below it: (n - r)/n;
    # the exponential variant: exp(-γ r/n)
    p = (n - ranks) / n if law == "linear" else np.exp(-gamma * ranks / n)
    want = inclusion_reference(p, k)
    got = empirical_inclusion(n, k, reps, law, gamma)
    spread = np.sqrt(want * (1 - want) / reps)
    assert np.all(np.abs(got - want) <= 5 * spread + 1e-9), np.abs(got - want).max()
    if k >= n:  # the scan reaches the end: P(include rank r) = (N - r)/N
        assert np.allclose(want, (n - ranks) / n)
        assert got.sum() == pytest.approx((n - 1) / 2, rel=0.01)


def test_algorithm1_for_small_k_concentrates_at_the_top():
    n, k, reps = 1000, 50, 2000
    torch.manual_seed(1)
    items, valid = algorithm1(torch.arange(1, n + 1).repeat(reps, 1), torch.full((reps,), n), k)
    assert bool(valid.all()) and items.shape == (reps, k)  # K reached in every row
    assert torch.equal(items, items.sort(dim=1).values)  # in rank order
    assert float((items <= 70).float().mean()) > 0.99  # nearly the top ~K/(1 - K/2N)
    assert float(items.float().median()) < 30


def test_algorithm1_respects_each_rows_candidates_and_k():
    torch.manual_seed(0)
    order = torch.tensor([[5, 3, 9, 1, 2], [4, 8, 6, 7, 2]])
    items, valid = algorithm1(order, torch.tensor([3, 5]), torch.tensor([5, 2]))
    assert set(items[0][valid[0]].tolist()) <= {5, 3}  # the last candidate (rank 3) never
    assert int(valid[1].sum()) <= 2 and int(valid[0].sum()) <= 2


def test_cd_tg_loss_in_expectation_over_algorithm1():
    """User 1's unobserved items 4, 5, 6 are ranked 1, 2, 3 by the teacher; with K = 3
    the scan reaches the end and keeps them with probabilities 2/3, 1/3 and 0 (user 2's
    1, 2, 3 likewise). The mean loss over many epochs' draws is the loss in expectation."""
    d = resolved(CDTG, sample_size=3, T1=2.0, T2=1.0, lambda_=0.5)
    data = tiny_bundle()
    t, s = TableModel(T_TABLE, 4), TableModel(S_TABLE, 3)
    d.setup(t, s, data, data.train.head(2))
    batch = data.split("users").head(2)
    torch.manual_seed(0)
    n = 3000
    mean = sum(d.loss(step_for(batch, s, t, epoch=e)).item() for e in range(n)) / n
    sig = torch.sigmoid
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expected = 0.0
    for u, pos, unobs in ((1, [1, 2, 3], [4, 5, 6]), (2, [4, 5, 6], [1, 2, 3])):
        cf = -sum(math.log(sig(S_TABLE[u, i]).item()) for i in pos)
        q = sig((T_TABLE[u, unobs] + 1.0) / 2.0)
        per_item = bce(S_TABLE[u, unobs], q, reduction="none")
        expected += cf + 0.5 * float((torch.tensor([2 / 3, 1 / 3, 0.0]) * per_item).sum())
    # the KD term's spread over draws is < 1 per user: 3000 draws put the mean within ~0.02
    assert mean == pytest.approx(expected / 2, abs=0.03)


# --------------------------------------------------------------------------- on ML-100K


@pytest.fixture(scope="module")
def cdae_pair():
    data = resolved(MovieLens100K).load("ranking")
    cls = get_registry().get("model", "cdae")
    torch.manual_seed(0)
    teacher = cls(**cls.resolve_params({"embedding_size": 100}, "t")).build(data).eval()
    student = cls(**cls.resolve_params({"embedding_size": 10}, "s")).build(data)
    return data, teacher, student


def terms_of(distiller, data, teacher, student, batch, epoch=0, epochs=10):
    distiller.setup(teacher, student, data, batch)
    task_loss = student.cf_loss(batch)
    step = Step(
        batch, "ranking", None, task_loss, epoch=epoch, student=student, teacher=teacher, epochs=epochs
    )
    torch.manual_seed(0)
    loss = distiller.loss(step)
    assert loss.item() == pytest.approx(sum(v.item() for v in step.terms.values()), rel=1e-5)  # terms add up
    return {k: v.item() for k, v in step.terms.items()}, step


@pytest.mark.parametrize(
    "cls, hp",
    [
        (RD, {"K": 15, "dynamic_start": 99}),
        (RDRank, {"K": 15, "dynamic_start": 99}),
        (CD, {"sample_ratio": 0.8}),
        (CDTG, {"sample_ratio": 0.8, "T1": 2.0, "T2": 1.0}),
        (CDSG, {"sample_ratio": 0.8, "T1": 2.0, "T2": 1.0}),
    ],
)
def test_rd_and_cd_terms_are_per_instance_means_over_the_batch(cls, hp, cdae_pair):
    """RD (official losses.py) and CD sum each instance's terms and average over the
    batch: the terms of a batch are the mean of its halves' terms."""
    data, teacher, student = cdae_pair
    student.eval()  # (no dropout: the same scores in every call)
    users = data.split("users").head(64)
    halves = [{k: v[:32] for k, v in users.items()}, {k: v[32:] for k, v in users.items()}]
    whole, _ = terms_of(resolved(cls, **hp), data, teacher, student, users)
    parts = [terms_of(resolved(cls, **hp), data, teacher, student, h)[0] for h in halves]
    for key, value in whole.items():
        if key == "task":
            continue
        mean = (parts[0][key] + parts[1][key]) / 2
        # (a rank-aware or uniform sample is drawn anew for each call: equal in law only)
        tol = 1e-5 if cls is RD else 0.1
        assert value == pytest.approx(mean, rel=tol), key


def test_rd_term_against_the_official_weighted_log_loss(cdae_pair):
    """L_RD per user = Σ_r w_r·(−log σ(s_r)), w_r = exp(−r/λ)/Σ exp(−k/λ), the teacher's
    top 15 unobserved items; ρ·mean over users; (1 − ρ)·the model's own loss."""
    data, teacher, student = cdae_pair
    student.eval()
    batch = data.split("users").head(16)
    terms, _ = terms_of(resolved(RD, K=15, rho=0.5, dynamic_start=99), data, teacher, student, batch)
    with torch.no_grad():
        t = teacher(batch).masked_fill(data.split("history")["mask"][batch["user"]], float("-inf"))
        t[:, 0] = float("-inf")
        top = t.topk(15, dim=1).indices
        s = student(batch).gather(1, top)
        w = torch.exp(-torch.arange(1, 16).float())
        w = w / w.sum()
        want = 0.5 * float(-(w * torch.nn.functional.logsigmoid(s)).sum(1).mean())
    assert terms["rd"] == pytest.approx(want, rel=1e-4)
    assert terms["task"] == pytest.approx(0.5 * student.cf_loss(batch).item(), rel=1e-4)


def test_de_rrd_terms_are_sums_over_unique_users_as_the_official_code(cdae_pair):
    """The official code sums the base loss over rows and DE/RRD over the batch's unique
    users: repeating every row doubles the base sum but not the DE/RRD sums, so (with
    the loss divided by the rows here) the DE/RRD terms halve against the task term."""
    data, teacher, student = cdae_pair
    student.eval()
    users = data.split("users").head(32)
    twice = {k: torch.cat([v, v]) for k, v in users.items()}
    once, _ = terms_of(resolved(DERRD, use_de=False), data, teacher, student, users)
    doubled, _ = terms_of(resolved(DERRD, use_de=False), data, teacher, student, twice)
    assert doubled["rrd"] == pytest.approx(once["rrd"] / 2, rel=1e-5)
    assert doubled["task"] == pytest.approx(once["task"], rel=1e-5)


def test_de_temperature_spans_the_training_as_the_official_annealing():
    d = resolved(DERRD)
    assert d.tau(0, 50) == 1.0
    assert d.tau(25, 50) == pytest.approx(1e-5)
    assert d.tau(50, 50) == pytest.approx(1e-10)


def test_distillers_log_sample_size_and_teacher_rank(cdae_pair):
    data, teacher, student = cdae_pair
    batch = data.split("users").head(64)
    _, tg = terms_of(resolved(CDTG, sample_ratio=0.8), data, teacher, student, batch)
    _, base = terms_of(resolved(CD, sample_ratio=0.8), data, teacher, student, batch)
    n_unobs = (data.info["n_items"] - 1) - data.split("history")["mask"][batch["user"]].sum(1).float()
    # Algorithm 1 with K = 0.8·|I_u^-| ≥ |I_u^-|/2 ends its scan first: ≈ (|I_u^-| − 1)/2 items
    assert float(tg.stats["sample_size"]) == pytest.approx(float((n_unobs - 1).mean() / 2), rel=0.05)
    assert float(tg.stats["sample_rank_pct"]) == pytest.approx(100 / 3, abs=2)  # E[π | kept] = 1/3
    assert float(base.stats["sample_size"]) == pytest.approx(
        float(torch.ceil(0.8 * n_unobs).mean()), rel=1e-3
    )
    assert float(base.stats["sample_rank_pct"]) == pytest.approx(50, abs=2)  # uniform


# --------------------------------------------------------------------------- Caser


def test_caser_soft_targets_come_from_each_instances_own_context():
    data = resolved(MovieLens100K).load("ranking")
    cls = get_registry().get("model", "caser")
    torch.manual_seed(0)
    teacher = cls(**cls.resolve_params({"embedding_size": 50}, "t")).build(data).eval()
    student = cls(**cls.resolve_params({"embedding_size": 5}, "s")).build(data)
    train = data.train
    user = int(train["user"][100])
    rows = torch.nonzero(train["user"] == user).flatten()[-2:]  # two instances of one user
    batch = {k: v[rows] for k, v in train.tensors.items()}
    assert not torch.equal(batch["seq"][0], batch["seq"][1])
    d = resolved(CDTG, sample_size=50, T1=1.0, T2=0.0)
    d.setup(teacher, student, data, batch)
    step = Step(batch, "ranking", None, torch.tensor(0.0), student=student, teacher=teacher)
    view = d.context_view(step)
    unobserved = torch.nonzero(~data.split("history")["mask"][user]).flatten()
    items = unobserved[unobserved > 0][:40][None, :].repeat(2, 1)
    sample = Sample(items, torch.ones_like(items, dtype=torch.bool), view=view)
    targets = d.teacher_scores(step, d.rows(step), sample)
    assert not torch.allclose(targets[0], targets[1])  # different contexts, different targets
    with torch.no_grad():
        for r in range(2):
            one = {k: v[r : r + 1] for k, v in batch.items()}
            assert torch.allclose(targets[r], teacher.score(one, items[r : r + 1])[0], atol=1e-5)


# --------------------------------------------------------------------------- optimisations


def experts_reference(e, s, z):
    """Σ_m z_m·E_m(s) as the official code computes it: every expert's output stacked."""
    hidden = torch.relu(torch.einsum("bd,mdh->bmh", s, e.w1) + e.b1)
    out = torch.einsum("bmh,mht->bmt", hidden, e.w2) + e.b2
    return (z[:, :, None] * out).sum(dim=1)


@pytest.mark.parametrize("tau", [1.0, 1e-3, 1e-8])
@pytest.mark.parametrize("path", ["dense", "sparse", "forward"])
def test_de_experts_match_the_stacked_experts_in_value_and_gradient(tau, path):
    """The two-matmul mixture and the selected-experts-only path give the stacked
    computation's output and gradients (expert weights, selection network, student
    representation) for a soft (τ = 1) and a saturated (one-hot) selection."""
    from harness_recsys.distillers import Experts

    torch.manual_seed(0)
    e = Experts(6, 5, 12)
    e.sparse_work = 0  # (so that forward takes the sparse path on this small case)
    s = torch.randn(40, 5, requires_grad=True)
    t = torch.randn(40, 12)
    grads = []
    for how in ("reference", path):
        torch.manual_seed(1)  # the same Gumbel draws
        if how == "forward":
            out = e(s, t, tau)
        else:
            z = e.gate(t, tau)
            out = experts_reference(e, s, z) if how == "reference" else getattr(e, how)(s, z)
        loss = ((t - out) ** 2).sum()
        params = [s, *e.parameters()]
        grads.append([loss.detach(), *torch.autograd.grad(loss, params)])
    if tau < 1e-6:  # one-hot in float: forward takes the sparse path
        assert float((e.gate(t, tau) != 0).float().mean()) == pytest.approx(1 / 6)
    for want, got in zip(*grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def algorithm1_loop(scores, trained, k, u, law, gamma):
    """Algorithm 1 as printed, one row at a time, given the uniforms of each scan
    position: scan the unobserved items in descending score; position i is kept when
    i < ⌊u·n⌋ + 1 (a uniform j on 1..n), or when u < exp(−γ·i/n); stop at K kept."""
    out = []
    for r in range(len(scores)):
        cand = [i for i in range(1, scores.shape[1]) if not trained[r, i]]
        cand.sort(key=lambda i: -float(scores[r, i]))
        n, kr, kept = len(cand), int(k if isinstance(k, int) else k[r]), []
        for pos, item in enumerate(cand, start=1):
            if pos > u.shape[1]:  # (not enough uniforms: the caller draws more)
                return None
            x = float(u[r, pos - 1])
            if (pos < int(x * n) + 1) if law == "linear" else (x < math.exp(-gamma * pos / n)):
                kept.append(item)
            if len(kept) == kr:
                break
        out.append(kept)
    return out


@pytest.mark.parametrize(
    "k, law, gamma",
    [
        (5, "linear", 1.0),  # the scan stops early: only the top 2K + 64 are ranked
        (torch.arange(40) % 20 + 1, "linear", 1.0),  # K per row
        (5, "exponential", 40.0),  # few acceptances: rows fall back to the full ranking
        (150, "linear", 1.0),  # K near |I_u^-|/2: the full ranking
    ],
)
@pytest.mark.parametrize("ranked", [True, False])
def test_algorithm1_keeps_what_the_printed_scan_keeps(k, law, gamma, ranked):
    """Given the same uniforms (the first 2K + 64 positions' drawn first, then, if a
    row needs them, the rest's), the scan on a ranking (`algorithm1`) and on scores
    (`algorithm1_by_scores`, a top-k) keep the items the printed loop keeps, in rank
    order."""
    from harness_recsys.teacher import algorithm1_by_scores, rank_unobserved

    torch.manual_seed(0)
    scores = torch.randn(40, 300)
    trained = torch.rand(40, 300) < torch.linspace(0.05, 0.9, 40)[:, None]  # |I_u^-| 30 to 285
    order, _, n = rank_unobserved(scores, trained)
    width = int(n.max())
    short = min(width, 2 * int(k if isinstance(k, int) else k.max()) + 64)
    for seed in range(3):
        torch.manual_seed(seed)
        u = torch.rand(40, short)
        want = algorithm1_loop(scores, trained, k, u, law, gamma)
        if want is None:  # a row's scan went on past the first 2K + 64 positions
            u = torch.cat([u, torch.rand(40, width - short)], dim=1)
            want = algorithm1_loop(scores, trained, k, u, law, gamma)
        torch.manual_seed(seed)
        if ranked:
            items, valid = algorithm1(order, n, k, law, gamma)
        else:
            items, valid = algorithm1_by_scores(scores, trained.clone(), k, law, gamma)
        assert [row[ok].tolist() for row, ok in zip(items, valid, strict=True)] == want


def test_uniform_draw_is_the_gumbel_draw_with_equal_weights():
    """CD-Base's uniform sample (the k largest uniforms among the candidates) is the
    sample the Gumbel-top-k draw with weights 1 on the candidates makes from the same
    uniforms."""
    from harness_recsys.teacher import draw, draw_uniform

    torch.manual_seed(0)
    candidates = torch.rand(50, 400) < torch.linspace(0.01, 0.9, 50)[:, None]  # some rows < k
    for seed in range(3):
        torch.manual_seed(seed)
        want_items, want_valid = draw(candidates.float(), 20)
        torch.manual_seed(seed)
        items, valid = draw_uniform(candidates, 20)
        assert torch.equal(valid, want_valid)
        assert torch.equal(items[valid], want_items[want_valid])


# ------------------------------------------- one forward pass per step; per-user terms once


def test_cdae_step_state_gives_recboles_loss_bit_for_bit(cdae_pair):
    """The CDAE loss from the step's shared forward pass (`encode`, then `cf_loss` with
    the state) is RecBole's `calculate_loss` (divided per user as before), loss and
    gradients equal bit for bit under the same dropout draw; the training rows read
    from the dense mask are RecBole's `get_rating_matrix`."""
    data, _, student = cdae_pair
    student.train()
    users = data.split("users").head(128)["user"]
    assert torch.equal(student.rating_rows(users), student.net.get_rating_matrix(users))
    params = [p for p in student.parameters() if p.requires_grad]
    for seed in range(2):
        torch.manual_seed(seed)
        old = student.net.calculate_loss({student.net.USER_ID: users})
        reg = student.regulariser()
        old = (old - reg) / len(users) + reg
        old_grads = torch.autograd.grad(old, params, allow_unused=True)
        torch.manual_seed(seed)
        new = student.cf_loss({"user": users}, student.encode({"user": users}))
        new_grads = torch.autograd.grad(new, params, allow_unused=True)
        assert torch.equal(old, new)
        for a, b in zip(old_grads, new_grads, strict=True):
            assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("k", [15, 800])  # the gather path; the every-item path (K ≥ 1/8 of the items)
def test_scores_from_the_step_state_match_a_new_forward_pass(cdae_pair, k):
    data, _, student = cdae_pair
    student.eval()  # (no dropout: both forward passes see the same input)
    batch = data.split("users").head(32)
    items = torch.randint(1, data.info["n_items"], (32, k))
    params = [p for p in student.parameters() if p.requires_grad]
    fresh = student.score(batch, items)
    shared = student.score(batch, items, student.encode(batch))
    assert torch.allclose(fresh, shared, rtol=1e-5, atol=1e-5)
    g_fresh = torch.autograd.grad(fresh.sum(), params, allow_unused=True)
    g_shared = torch.autograd.grad(shared.sum(), params, allow_unused=True)
    for a, b in zip(g_fresh, g_shared, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [RD, CDTG, CDSG, DERRD])
def test_a_cdae_step_draws_its_input_corruption_once(cls, cdae_pair):
    """The task's loss and the distiller's terms share one forward pass per step (the
    official RD code scores all of a step's items in one pass): the dropout of the
    input runs once in training mode (CD-SG's ranking pass runs in eval mode)."""
    from harness.tasks import get_task

    data, teacher, student = cdae_pair
    student.train()
    batch = data.split("users").head(64)
    d = resolved(cls, K=15, dynamic_start=99) if cls is RD else resolved(cls)
    d.setup(teacher, student, data, batch)
    calls = []
    hook = student.net.dropout.register_forward_hook(lambda m, i, o: calls.append(m.training))
    try:
        task = get_task("ranking")
        out = task.train_forward(student, batch)
        step = Step(
            batch,
            "ranking",
            out,
            lambda: task.train_loss(student, batch, out),
            student=student,
            teacher=teacher,
            epochs=10,
        )
        d.loss(step).backward()
    finally:
        hook.remove()
    assert calls.count(True) == 1


@pytest.fixture(scope="module")
def bpr_pair():
    data = resolved(MovieLens100K).load("ranking")
    cls = get_registry().get("model", "bpr")
    torch.manual_seed(0)
    teacher = cls(**cls.resolve_params({"embedding_size": 40}, "t")).build(data).eval()
    student = cls(**cls.resolve_params({"embedding_size": 8}, "s")).build(data)
    return data, teacher, student


@pytest.mark.parametrize(
    "cls, hp",
    [
        (RD, {"K": 10, "dynamic_start": 99}),
        (RDRank, {"K": 10, "dynamic_start": 99}),
        (CD, {"sample_size": 30}),
        (CDTG, {"sample_ratio": 0.5}),
    ],
)
def test_per_user_terms_once_per_user_equal_the_per_row_mean(cls, hp, bpr_pair, monkeypatch):
    """On interaction rows (BPR) whose users repeat, a term that depends on the user
    alone is computed once per unique user and weighted by its rows: the loss and its
    gradients equal the per-row computation's. (DE-RRD's terms are sums over the unique
    users by definition: test_de_rrd_terms_are_sums_over_unique_users_as_the_official_code.)"""
    import harness_recsys.distillers as distillers

    data, teacher, student = bpr_pair
    train = data.train
    rows = torch.cat([torch.nonzero(train["user"] == u).flatten()[:n] for u, n in ((5, 7), (9, 1), (13, 4))])
    batch = {k: v[rows] for k, v in train.tensors.items()}
    d = resolved(cls, **hp)
    d.setup(teacher, student, data, batch)
    params = [p for p in student.parameters() if p.requires_grad]
    results = []
    for per_row in (False, True):
        if per_row:
            monkeypatch.setattr(distillers, "term_rows", lambda b, m: distillers.Rows(b, b["user"]))
        torch.manual_seed(0)  # (the same draws: the epoch's samples are kept by the distiller)
        step = Step(batch, "ranking", None, torch.tensor(1.0), student=student, teacher=teacher, epochs=10)
        loss = d.loss(step)
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    (a, ga), (b, gb) = results
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    for x, y in zip(ga, gb, strict=True):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cf_loss, computed", [("selective", False), ("model", True)])
def test_cd_with_its_own_cf_term_never_computes_the_models_loss(cf_loss, computed, bpr_pair, monkeypatch):
    """CD's selective CF term replaces the model's own loss: the runner computes the
    task loss only when a distiller reads it (Step.task_loss), so BPR's loss and its
    negatives are never computed for it; with cf_loss: model they are."""
    from harness.grid import TRAIN
    from harness.runner import train_model
    from harness.tasks import get_task

    data, teacher, student = bpr_pair
    calls = []
    real = type(student).cf_loss
    monkeypatch.setattr(type(student), "cf_loss", lambda self, b, *a: calls.append(1) or real(self, b, *a))
    d = resolved(CD, sample_size=5, cf_loss=cf_loss)
    d.setup(teacher, student, data, data.train.head(2))
    part = TensorSplit({k: v[:4096] for k, v in data.train.tensors.items()})
    small = dataclasses.replace(data, train=part)
    cfg = {k: p.default for k, p in TRAIN.items()} | {"optimizer": "adam", "lr": 0.001}
    train_model(
        student,
        small,
        get_task("ranking"),
        cfg,
        1,
        2048,
        torch.Generator().manual_seed(0),
        distiller=d,
        teacher=teacher,
    )
    assert bool(calls) is computed


def test_uniform_draw_by_rejection_is_sampling_without_replacement():
    """The rejection draw (each row's k from its candidates, non-candidates and repeats
    redrawn) against the law of a uniform k-subset, computed here: every candidate is
    in the sample with probability k/n, every pair of candidates with k(k−1)/(n(n−1))
    (with replacement it would be k²/n² less the repeats), no non-candidate and no
    repeat ever, within the binomial spread over 20,000 rows; rows short of
    candidates in the first round are drawn again (a narrow `width`)."""
    from harness_recsys.teacher import draw_by_rejection

    torch.manual_seed(0)
    n_items, k, reps = 30, 6, 20000
    pattern = torch.zeros(n_items, dtype=torch.bool)
    pattern[[1, 2, 3, 5, 8, 13, 21, 22, 23, 24, 25, 29]] = True  # n = 12 candidates
    n = int(pattern.sum())
    candidates = pattern.repeat(reps, 1)
    items, valid = draw_by_rejection(candidates, k, width=30)  # (~10% short: redrawn)
    assert bool(valid.all()) and items.shape == (reps, k)
    assert bool(pattern[items].all())  # candidates only
    assert bool((items.sort(dim=1).values.diff(dim=1) > 0).all())  # no repeats
    hits = torch.zeros(reps, n_items).scatter_(1, items, 1.0)
    p1 = hits.mean(0)[pattern]
    want1 = k / n
    assert torch.all((p1 - want1).abs() <= 5 * math.sqrt(want1 * (1 - want1) / reps))
    a, b = 2, 23
    p2 = float((hits[:, a] * hits[:, b]).mean())
    want2 = k * (k - 1) / (n * (n - 1))
    assert abs(p2 - want2) <= 5 * math.sqrt(want2 * (1 - want2) / reps)


def test_uniform_draw_takes_the_rejection_path_only_with_enough_candidates():
    from harness_recsys.teacher import draw_uniform

    torch.manual_seed(0)
    many = torch.rand(40, 1000) < 0.5  # ≈ 500 candidates a row ≥ 4k
    items, valid = draw_uniform(many, 20)
    assert bool(valid.all()) and bool(many.gather(1, items).all())
    few = torch.zeros(3, 100, dtype=torch.bool)
    few[:, :5] = True  # 5 candidates < k: all of them, the rest invalid
    items, valid = draw_uniform(few, 8)
    assert valid.sum(1).tolist() == [5, 5, 5]
    assert sorted(items[0][valid[0]].tolist()) == [0, 1, 2, 3, 4]
