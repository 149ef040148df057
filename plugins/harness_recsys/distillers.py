"""Ranking distillers: RD and RD-Rank (Tang & Wang, "Ranking Distillation", KDD 2018),
CD-Base, CD-TG and CD-SG (Lee et al., "Collaborative Distillation for Top-N
Recommendation", ICDM 2019), DE-RRD (Kang et al., "DE-RRD: A Knowledge Distillation
Framework for Recommender System", CIKM 2020). Notation: s student score (logit),
t teacher score, σ the sigmoid, I_u^- the items user u has not trained on. An
*instance* is a training row: an interaction (BPR, Caser, NeuMF) or a user (CDAE).

Reductions follow each method's official code, so that λ and ρ mean what they mean
there (docs/recsys.md lists the measured size of every term):

RD      L = (1−ρ)·L_CF + ρ·L_RD (the CD paper's form of RD; ρ 0.5 is the official
        code's teach_alpha 1 up to a factor ½ on the whole loss), per instance, then
        the mean over the batch (github graytowne/rank_distill, losses.py):
        L_RD = −Σ_{r=1..K} w_r·log σ(s_{π_r}), π_1..π_K the teacher's top K of I_u^-
        for the instance (for context models such as Caser: the teacher run on the
        instance's own sequence); w_r = w^a_r·w^b_r, w^a_r = exp(−r/λ)/Σ_k exp(−k/λ),
        and after epoch `dynamic_start` the dynamic weight w^b_r = max(0, tanh(μ·(r̂_r
        − (r−1)))), r̂_r = ⌊(|I|−1)·#{j: s_j > s_{π_r}}/n⌋ from n uniformly drawn
        unobserved items; the product is detached and *not* renormalised (the official
        `_weight_renormalize = False`).
RD-Rank the same loss on K items drawn by CD's rank-aware sampling (Algorithm 1 by
        default) from the teacher's ranking, weighted by their order in it.
CD-*    L = L_CF + λ·L_KD (eqs. 5-7, 13), per instance (sums over items), then the
        mean over the batch (the paper has no official code; its equations sum over
        items per user):
        L_CF = −Σ_{i∈I_u^+} log σ(s_ui) (selective: observed items only),
        L_KD = Σ_{i∈S} BCE(σ(s_ui), q_ui), q_ui = σ((t_ui + T2)/T1), S ⊂ I_u^-:
        CD-Base K items uniformly; CD-TG rank-aware on the teacher's ranking (drawn once
        per user and epoch, or per instance for context models); CD-SG rank-aware on
        the student's current ranking, made in eval mode at each step, the teacher
        asked for the scores. K = `sample_size`, or `sample_ratio`·|I_u^-| (Fig. 8's
        reading of the ratio, the default) or ·|I_u^+| (`ratio_of: observed`).
DE-RRD  L = L_base + λ_DE·L_DE + λ_RRD·L_RRD, every term a *sum* as in the official
        code (github SeongKu-Kang/DE-RRD_CIKM20: BPR `.sum()`, DE `.sum(-1).sum()`,
        RRD summed over the batch's unique users); here the whole loss is divided by
        the batch's rows, so the task term is the model's usual mean and the learning
        rate means what it means for the plain student, while the ratio of the terms
        is the official one.
        DE: M experts per side, each d_s → ⌊(d_s+d_t)/2⌋ → d_t (ReLU); a selection
        network α = softmax(W·t_e) on the teacher's representation picks an expert by
        Gumbel-softmax at temperature τ_e = (1e-10)^(e/E), E the training's epochs
        (the official T_annealing from 1 to 1e-10 over max_epoch);
        L_DE = Σ_users ‖t_u − Σ_m z_m E_m(s_u)‖² + ½(Σ_pos items + Σ_drawn items).
        RRD: per user and epoch, K interesting items drawn from the teacher's top N_max
        of I_u^- with p(r) ∝ exp(−r/T), kept in teacher order, and L uninteresting ones
        uniformly from the rest; L_RRD(u) = −Σ_k [s_{i_k} − log(Σ_{l≥k} e^{s_{i_l}} +
        Σ_j e^{s_j})], by log-sum-exp (no clamping needed).

Every term scores the student through the step's one forward pass (`Step.student_out`,
the model's `encode`): on CDAE, one draw of input corruption per step, shared by the
model's own loss and the distillation terms, as the official RD code scores a step's
targets, negatives and candidates in one pass. On interaction rows (BPR) a term that
depends on the row's user alone (every per-user-per-epoch sample) is computed once per
unique user and weighted by its rows (`Rows`): the same batch mean.

Every distiller logs its terms (`Step.log_terms`) and, when it samples, the mean
sample size per instance and the mean teacher-rank percentile of the sampled items
(`Step.log_stats`): the leaderboard's diagnostics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import Distiller, Param, Step
from harness.errors import CellError, UsageError

from .models import StepState
from .teacher import (
    TeacherView,
    algorithm1,
    algorithm1_by_scores,
    draw,
    draw_uniform,
    rank_unobserved,
    rank_weights,
    teacher_view,
    uniform_unobserved,
)

LAWS = ("linear", "exponential")
#: how rank-aware samples are drawn (teacher.py's docstring)
SAMPLERS = ("algorithm1", "weighted")


def positives(batch: dict[str, torch.Tensor], data_history: torch.Tensor) -> torch.Tensor:
    """[B, P] the row's observed items: its item, or every training item of a user row
    (padded with 0, the padding item, which callers mask)."""
    if "item" in batch:
        return batch["item"][:, None]
    return data_history.index_select(0, batch["user"])


@dataclass
class Rows:
    """The rows a distillation term is computed on: the step's batch itself, or, when
    the student's scores depend on the user alone and users repeat in the batch (BPR's
    interaction rows), the batch's unique users, each weighted by its share of the
    batch's rows. A term that depends on the row's user alone then has the same mean
    over the batch, Σ_u count_u·term_u / B, computed once per user."""

    batch: dict[str, torch.Tensor]
    users: torch.Tensor
    weight: torch.Tensor | None = None  # [R] count_u / B; None: the batch's own rows

    def mean(self, per_row: torch.Tensor) -> torch.Tensor:
        """The batch mean of a per-row term [R]."""
        return per_row.mean() if self.weight is None else (per_row * self.weight).sum()


@dataclass
class Sample:
    """Items drawn for each row [R, k], their validity, and what is known of them: the
    teacher's scores and ranks (kept with a per-epoch draw), the teacher's view of the
    rows (computed in the step for context models)."""

    items: torch.Tensor
    valid: torch.Tensor
    scores: torch.Tensor | None = None
    rank: torch.Tensor | None = None
    view: TeacherView | None = None
    #: [R, 2] per row: the sample's size and the sum of its items' teacher-rank
    #: percentiles (the diagnostics, kept with a per-epoch draw)
    stats: torch.Tensor | None = None


def term_rows(batch: dict[str, torch.Tensor], model: nn.Module) -> Rows:
    """`Rows` of the batch for a term that depends on the row's user alone (when the
    model's scores do: `user_only`); the batch's rows otherwise."""
    users = batch["user"]
    if getattr(model, "user_only", False):
        if int(users.max()) < 16 * len(users):  # (few ids: a count, not torch.unique's sort)
            counts = torch.bincount(users)
            unique = torch.nonzero(counts).flatten()
            counts = counts[unique]
        else:
            unique, counts = torch.unique(users, return_counts=True)
        if len(unique) < len(users):
            return Rows({"user": unique}, unique, counts.float() / len(users))
    return Rows(batch, users)


def student_score(step: Step, rows: Rows, items: torch.Tensor) -> torch.Tensor:
    """The student's scores of `items` for `rows`: on the step's own batch, through the
    step's forward pass (`Step.student_out`, from the model's `encode`) when it has one,
    so that every loss of the step sees the same draw of input corruption."""
    if rows.batch is step.batch and step.student_out is not None:
        return step.student.score(rows.batch, items, step.student_out)
    return step.student.score(rows.batch, items)


def rank_sample(
    view: TeacherView,
    how: str,
    k: torch.Tensor | int,
    law: str = "linear",
    gamma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Items of each row's I_u^- by a ranking `view` (rows: users or instances): "top"
    (the first k), "uniform", "algorithm1" or "weighted" (teacher.py). Returns items
    [B, w] in the view's rank order and valid [B, w]; k an int or one per row."""
    if how == "algorithm1":
        return algorithm1(view.order, view.n_unobserved, k, law, gamma)
    kk = k if isinstance(k, int) else int(k.max())

    def first_k(items: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Each row's own k: the first k of its list (in draw order for a draw)."""
        if isinstance(k, int):
            return valid
        return valid & (torch.arange(items.shape[1], device=items.device)[None, :] < k.reshape(-1, 1))

    if how == "top":
        items = view.order[:, :kk]
        return items, first_k(items, view.rank.gather(1, items) > 0)
    if how == "uniform":
        items, valid = draw_uniform(view.rank > 0, kk)
    else:
        items, valid = draw(rank_weights(view.rank, view.n_unobserved, law, gamma), kk)
    valid = first_k(items, valid)  # (successive draws: the first k are a sample of k)
    rank = view.rank.gather(1, items).masked_fill(~valid, torch.iinfo(view.rank.dtype).max)
    order = rank.argsort(dim=1)  # then in the view's rank order
    return items.gather(1, order), valid.gather(1, order)


class RankingDistiller(Distiller):
    """Base of the ranking distillers: what they take from the teacher.

    For models whose scores depend on the user alone (CDAE, BPR) the teacher's ranking
    of every user is computed once per teacher (`teacher_view`) and samples are drawn
    once per user and epoch. For context models (Caser) the teacher's scores depend on
    the instance's own sequence: they are computed in the step, the teacher frozen and
    in eval mode, for exactly the batch's instances (each instance once per epoch)."""

    tasks = frozenset({"ranking"})
    needs = frozenset({"teacher", "scores"})

    view: TeacherView
    history: torch.Tensor
    trained: torch.Tensor

    def setup(self, teacher, student, data, example):
        if teacher is None:
            raise CellError(f"{self.name} needs a trained teacher")
        self.per_user = bool(getattr(teacher, "user_only", True))
        self.view = teacher_view(teacher, data) if self.per_user else None
        self.history = data.split("history")["items"]
        self.trained = data.split("history")["mask"]
        self.n_items = int(data.info["n_items"])
        self._table_key = None
        return self.extra_setup(teacher, student, data)

    def extra_setup(self, teacher, student, data) -> list[nn.Parameter]:
        return []

    @property
    def n_unobserved(self) -> torch.Tensor:
        """[n_users] |I_u^-| (item 0 is padding), computed once per `trained` mask: not a
        [B, n_items] gather at every step."""
        if getattr(self, "_n_unobserved_of", None) is not self.trained:
            self._n_unobserved = (~self.trained[:, 1:]).sum(dim=1)
            self._n_unobserved_of = self.trained
        return self._n_unobserved

    def context_view(self, step: Step) -> TeacherView:
        """Context models: the teacher's view of the batch's instances, from its scores on
        each instance's own context, computed now (frozen, eval mode)."""
        users = step.batch["user"]
        with torch.no_grad():
            scores = step.teacher(step.batch).float()
        order, rank, n = rank_unobserved(scores, self.trained.index_select(0, users))
        return TeacherView(scores.masked_fill(rank == 0, float("-inf")), order, rank, n)

    def rows(self, step: Step) -> Rows:
        """The rows this distiller's per-user terms are computed on (`term_rows`)."""
        return term_rows(step.batch, step.student) if self.per_user else Rows(step.batch, step.batch["user"])

    def teacher_sample(
        self,
        step: Step,
        rows: Rows,
        how: str,
        k: int | Callable[[torch.Tensor], torch.Tensor],
        law: str = "linear",
        gamma: float = 1.0,
    ) -> Sample:
        """Items drawn from the teacher's ranking for `rows`; k an int or a function of
        the users giving each its K. Per-user models draw for every user
        once per epoch (rows of one user share the draw) and keep the sampled items'
        teacher scores and ranks with the draw; context models draw for each instance
        from its own context, in the step."""

        def ks(users: torch.Tensor) -> torch.Tensor | int:
            return k if isinstance(k, int) else k(users)

        if not self.per_user:
            view = self.context_view(step)
            return Sample(*rank_sample(view, how, ks(rows.users), law, gamma), view=view)
        key = (step.epoch, how, law, gamma, k if isinstance(k, int) else "per-user")
        if self._table_key != key:
            everyone = torch.arange(len(self.trained), device=self.trained.device)
            items, valid = rank_sample(self.view, how, ks(everyone), law, gamma)
            rank = self.view.rank.gather(1, items)
            stats = self.sample_stats(self.n_unobserved, rank, valid)
            self._table = (items, valid, self.view.scores.gather(1, items), rank, None, stats)
            self._table_key = key
        return Sample(*(None if x is None else x.index_select(0, rows.users) for x in self._table))

    @staticmethod
    def sample_stats(n_unobserved: torch.Tensor, rank: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[R, 2] each row's sample size and sum of its items' teacher-rank percentiles
        (100·rank/|I_u^-|), given the rows' |I_u^-| [R]."""
        n = n_unobserved.clamp(min=1)[:, None].float()
        v = valid.float()
        return torch.stack([v.sum(1), (100.0 * rank.float() / n * v).sum(1)], dim=1)

    def teacher_scores(self, step: Step, rows: Rows, sample: Sample) -> torch.Tensor:
        """[R, k] the teacher's scores of the sampled items."""
        if sample.scores is not None:
            return sample.scores
        if sample.view is not None:
            return sample.view.scores.gather(1, sample.items)
        if self.per_user:
            return self.view.scores[rows.users[:, None], sample.items]
        with torch.no_grad():
            return step.teacher.score(step.batch, sample.items).float()

    def log_sample(self, step: Step, rows: Rows, sample: Sample) -> None:
        """Diagnostics of a sample: items per instance, and the mean teacher-rank
        percentile (100·rank/|I_u^-|) of the sampled items."""
        with torch.no_grad():
            stats = sample.stats
            if stats is None:
                rank = sample.rank  # (the teacher's rank of each sampled item)
                if rank is None and sample.view is not None:
                    rank = sample.view.rank.gather(1, sample.items)
                elif rank is None and self.per_user:
                    rank = self.view.rank[rows.users[:, None], sample.items]
                elif rank is None:  # (a context model's sample made without the teacher: CD-SG)
                    rank = self.context_view(step).rank.gather(1, sample.items)
                stats = self.sample_stats(self.n_unobserved.index_select(0, rows.users), rank, sample.valid)
            size = rows.mean(stats[:, 0])
            step.log_stats(sample_size=size, sample_rank_pct=rows.mean(stats[:, 1]) / size.clamp(min=1e-12))


# --------------------------------------------------------------------------- RD


class RD(RankingDistiller):
    name = "rd"
    label = "RD"
    description = "ranking distillation (Tang & Wang 2018): the teacher's top-K as weighted positives"
    diagnostics_note = (
        "RD's official reduction: per instance, K candidates whose weights sum to 1 against the "
        "instance's CF terms; an instance of CDAE is a user whose loss spans every item"
    )
    params = {
        "K": Param(10, "items of the teacher's top list (RD's default 10; the CD paper: 15 for CDAE)"),
        "rho": Param(0.5, "weight of the distillation loss: (1-rho)·L_CF + rho·L_RD"),
        "lambda_": Param(1.0, "position-weight temperature λ in exp(-r/λ)"),
        "mu": Param(0.1, "slope μ of the dynamic weight"),
        "n_estimate": Param(100, "items drawn to estimate the student's ranks"),
        "dynamic_start": Param(
            10, "the dynamic weight is used after this epoch (a large value turns it off)"
        ),
    }

    @classmethod
    def check(cls, params, where):
        if params["K"] < 1:
            raise UsageError(f"{where}.K: must be at least 1")
        if not 0 <= params["rho"] <= 1:
            raise UsageError(f"{where}.rho: must be in [0, 1], got {params['rho']}")

    def rd_loss(self, step: Step, rows: Rows, sample: Sample) -> torch.Tensor:
        hp = self.hparams
        items = sample.items
        K = items.shape[1]
        s = student_score(step, rows, items)
        r = torch.arange(K, device=s.device, dtype=s.dtype)
        w = torch.exp(-(r + 1) / hp["lambda_"])
        w = (w / w.sum())[None, :] * sample.valid.float()  # position weight, normalised over the K
        if step.epoch > hp["dynamic_start"]:
            with torch.no_grad():
                probe = uniform_unobserved(self.trained, rows.users, hp["n_estimate"])
                s_probe = student_score(step, rows, probe)
                above = (s_probe[:, None, :] > s.detach()[:, :, None]).sum(-1).float()
                r_hat = torch.floor((self.n_items - 2) * above / probe.shape[1])  # (|I| − 1)·share
                w = w * torch.clamp(torch.tanh(hp["mu"] * (r_hat - r[None, :])), min=0)
        kd = rows.mean(-(w.detach() * F.logsigmoid(s)).sum(dim=1))
        task, distil = (1 - hp["rho"]) * step.task_loss, hp["rho"] * kd
        step.log_terms(task=task, rd=distil)
        return task + distil

    def loss(self, step):
        rows = self.rows(step)
        sample = self.teacher_sample(step, rows, "top", int(self.hparams["K"]))
        self.log_sample(step, rows, sample)
        return self.rd_loss(step, rows, sample)


class RDRank(RD):
    name = "rd-rank"
    label = "RD-Rank"
    description = "RD's loss on items drawn by CD's rank-aware sampling from the teacher (Lee et al. 2019)"
    params = {
        **RD.params,
        "sampler": Param(
            "algorithm1", "rank-aware sampler: Algorithm 1 or eq. (9) weights", choices=SAMPLERS
        ),
        "law": Param("linear", "rank-aware sampling law", choices=LAWS),
        "gamma": Param(1.0, "slope γ of the exponential law"),
    }

    def loss(self, step):
        hp = self.hparams
        rows = self.rows(step)
        sample = self.teacher_sample(step, rows, hp["sampler"], int(hp["K"]), hp["law"], hp["gamma"])
        self.log_sample(step, rows, sample)
        return self.rd_loss(step, rows, sample)  # (items in teacher order: position weights follow it)


# --------------------------------------------------------------------------- CD


class CD(RankingDistiller):
    """CD-Base (uniform sampling); CD-TG and CD-SG below."""

    name = "cd-base"
    label = "CD-Base"
    description = "collaborative distillation (Lee et al. 2019), items sampled uniformly"
    guide: ClassVar[str] = "uniform"
    params = {
        "lambda_": Param(0.5, "weight λ of the KD loss (the paper: 0.5)"),
        "T1": Param(1.0, "temperature scale T1 of q = σ((t + T2)/T1) (the paper: CDAE 2, Caser 1)"),
        "T2": Param(0.0, "temperature shift T2 (the paper: CDAE 1, Caser 0)"),
        "sample_size": Param(50, "K, items sampled per instance (the paper: 50 for Caser)"),
        "sample_ratio": Param(
            0.0, "if > 0, K = ratio·|I_u^-| per user instead (the paper: 0.8 for CDAE on ML100K)"
        ),
        "ratio_of": Param(
            "unobserved",
            "what sample_ratio multiplies: |I_u^-| (Fig. 8's definition) or |I_u^+|",
            choices=("unobserved", "observed"),
        ),
        "sampler": Param(
            "algorithm1", "rank-aware sampler (TG, SG): Algorithm 1 or eq. (9) weights", choices=SAMPLERS
        ),
        "law": Param("linear", "rank-aware sampling law (TG, SG)", choices=LAWS),
        "gamma": Param(1.0, "slope γ of the exponential law"),
        "cf_loss": Param(
            "selective", "selective (eq. 6) or the model's own loss", choices=("selective", "model")
        ),
    }

    @classmethod
    def check(cls, params, where):
        if params["T1"] <= 0:
            raise UsageError(f"{where}.T1: must be positive, got {params['T1']}")
        if params["sample_size"] < 1 and params["sample_ratio"] <= 0:
            raise UsageError(f"{where}: sample_size must be at least 1 (or give sample_ratio)")

    def sample_sizes(self, users: torch.Tensor) -> torch.Tensor:
        """K per user: sample_size, or sample_ratio × |I_u^-| (or × |I_u^+|)."""
        ratio = self.hparams["sample_ratio"]
        if ratio <= 0:
            return torch.full_like(users, int(self.hparams["sample_size"]))
        n_unobs = self.n_unobserved.index_select(0, users)
        base = self.trained.shape[1] - 1 - n_unobs if self.hparams["ratio_of"] == "observed" else n_unobs
        return torch.ceil(ratio * base.float()).long().clamp(min=1)

    def sample(self, step: Step, rows: Rows) -> Sample:
        """Items of I_u^- to distil for `rows`, with what is known of them."""
        hp = self.hparams
        if self.guide == "student":
            return self.student_sample(step, rows)
        how = "uniform" if self.guide == "uniform" else hp["sampler"]
        k = self.sample_sizes if hp["sample_ratio"] > 0 else int(hp["sample_size"])
        return self.teacher_sample(step, rows, how, k, hp["law"], hp["gamma"])

    def student_sample(self, step: Step, rows: Rows) -> Sample:
        """Rank-aware sampling on the student's current ranking, in eval mode (no
        dropout), every step; a user whose scores depend on the user alone is ranked
        once per step however many rows it has."""
        hp = self.hparams
        was = step.student.training
        step.student.eval()
        try:
            with torch.no_grad():
                scores = step.student(rows.batch).float()
        finally:
            step.student.train(was)
        trained = self.trained.index_select(0, rows.users)
        k = self.sample_sizes(rows.users) if hp["sample_ratio"] > 0 else int(hp["sample_size"])
        if hp["sampler"] == "algorithm1":  # (ranks only as far as the scan goes)
            n = self.n_unobserved.index_select(0, rows.users)
            return Sample(*algorithm1_by_scores(scores, trained, k, hp["law"], hp["gamma"], n))
        view = TeacherView(scores, *rank_unobserved(scores, trained))
        return Sample(*rank_sample(view, hp["sampler"], k, hp["law"], hp["gamma"]))

    def loss(self, step):
        hp = self.hparams
        batch, rows = step.batch, self.rows(step)
        sample = self.sample(step, rows)
        self.log_sample(step, rows, sample)
        pos = positives(batch, self.history)
        if rows.batch is batch:  # (one scoring of both: the CF and the KD items)
            s = student_score(step, rows, torch.cat([pos, sample.items], dim=1))
            s_pos, s_kd = s[:, : pos.shape[1]], s[:, pos.shape[1] :]
        else:
            s_pos = student_score(step, Rows(batch, batch["user"]), pos)
            s_kd = student_score(step, rows, sample.items)
        if hp["cf_loss"] == "selective":
            cf = -(F.logsigmoid(s_pos) * (pos > 0)).sum(dim=1).mean()
        else:
            cf = step.task_loss
        with torch.no_grad():
            t = self.teacher_scores(step, rows, sample)
            q = torch.sigmoid((t + hp["T2"]) / hp["T1"]).nan_to_num(0.0)  # (invalid slots: -inf → 0)
        bce = F.binary_cross_entropy_with_logits(s_kd, q, reduction="none")
        kd = rows.mean((bce * sample.valid).sum(dim=1))
        distil = hp["lambda_"] * kd
        step.log_terms(task=cf, kd=distil)
        return cf + distil


class CDTG(CD):
    name = "cd-tg"
    label = "CD-TG"
    description = "collaborative distillation, teacher-guided rank-aware sampling (Lee et al. 2019)"
    guide = "teacher"


class CDSG(CD):
    name = "cd-sg"
    label = "CD-SG"
    description = "collaborative distillation, student-guided rank-aware sampling (Lee et al. 2019)"
    guide = "student"


# --------------------------------------------------------------------------- DE-RRD


class Experts(nn.Module):
    """M experts d_s → h → d_t (ReLU), evaluated together, and the selection network.

    The mixture Σ_m z_m·E_m(s) is computed without the [B, M, d_t] stack of every
    expert's output (the official code builds it, one Linear per expert): the hidden
    layers of all experts are one matmul s·[W1_1 … W1_M] → [B, M·h], and the second
    layers with the mixture are one more, (z ⊗ hidden)·[W2_1; …; W2_M] + z·b2, which
    is Σ_m z_m (W2_m·hidden_m + b2_m) term for term. When the annealed temperature has
    made most weights exactly 0 (z one-hot in float), only the experts a row selected
    are run on it (`sparse`, batched over the experts): an expert with z_m = 0 adds
    exactly 0 to the output and to every gradient (softmax's Jacobian z_m(δ − z)
    vanishes with z_m), so the result is the same up to the order of float additions."""

    #: run only the selected experts when at most this share of the weights is non-zero
    #: and the dense second layer would cost at least `sparse_work` multiply-adds (below
    #: that, the grouping's indexing costs about what it saves: a one-hot CDAE epoch at
    #: batch 128, 2.1e7, was 10% faster sparse; such small cases stay dense)
    sparse_share: ClassVar[float] = 0.25
    sparse_work: ClassVar[float] = 1e8

    def __init__(self, m: int, d_s: int, d_t: int) -> None:
        super().__init__()
        h = (d_s + d_t) // 2
        self.w1 = nn.Parameter(torch.empty(m, d_s, h))
        self.b1 = nn.Parameter(torch.empty(m, h))
        self.w2 = nn.Parameter(torch.empty(m, h, d_t))
        self.b2 = nn.Parameter(torch.empty(m, d_t))
        for w, b, fan_in in ((self.w1, self.b1, d_s), (self.w2, self.b2, h)):
            bound = 1 / math.sqrt(fan_in)  # nn.Linear's default initialisation
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)
        self.select = nn.Linear(d_t, m)

    def gate(self, t: torch.Tensor, tau: float) -> torch.Tensor:
        """z [B, M], the Gumbel-softmax of the selection network's α at temperature τ."""
        alpha = torch.softmax(self.select(t), dim=1)
        u = torch.rand_like(alpha)
        gumbel = -torch.log(-torch.log(u + 1e-10) + 1e-10)
        return torch.softmax((torch.log(alpha + 1e-10) + gumbel) / tau, dim=1)

    def dense(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Σ_m z_m·E_m(s) over every expert, as two matmuls."""
        m, d_s, h = self.w1.shape
        w1 = self.w1.permute(1, 0, 2).reshape(d_s, m * h)
        hidden = torch.relu(s @ w1 + self.b1.reshape(-1)).view(-1, m, h)
        mixed = (z[:, :, None] * hidden).reshape(-1, m * h)
        return mixed @ self.w2.reshape(m * h, -1) + z @ self.b2

    def sparse(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Σ_m z_m·E_m(s) with each expert run only on the rows that weight it: the
        (row, expert) pairs with z ≠ 0 grouped by expert, each group padded to the
        largest one's size, and all experts run at once as two batched matmuls
        [M, width, ·]. A padded slot's input is 0 and its output is never read, so it
        adds nothing to the output or to any gradient."""
        m, d_s, h = self.w1.shape
        rows, experts = torch.nonzero(z, as_tuple=True)
        order = torch.argsort(experts, stable=True)
        rows, experts = rows[order], experts[order]
        counts = torch.bincount(experts, minlength=m)
        slot = torch.arange(len(rows), device=s.device) - (counts.cumsum(0) - counts)[experts]
        x = s.new_zeros(m, int(counts.max()), d_s).index_put((experts, slot), s.index_select(0, rows))
        hidden = torch.relu(torch.baddbmm(self.b1[:, None, :], x, self.w1))
        out = torch.baddbmm(self.b2[:, None, :], hidden, self.w2)[experts, slot]
        mixed = z[rows, experts][:, None] * out
        return s.new_zeros(len(s), self.w2.shape[2]).index_add(0, rows, mixed)

    def forward(self, s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
        """Σ_m z_m·E_m(s), z the Gumbel-softmax of the selection over experts."""
        z = self.gate(t, tau)
        work = len(s) * self.w2.numel()
        if work >= self.sparse_work and float((z != 0).float().mean()) <= self.sparse_share:
            return self.sparse(s, z)
        return self.dense(s, z)


class DERRD(RankingDistiller):
    name = "de-rrd"
    label = "DE-RRD"
    description = "distillation experts + relaxed ranking distillation (Kang et al., CIKM 2020)"
    diagnostics_note = (
        "the official λ_DE 0.01 and λ_RRD 0.001 were set against a BPR loss summed over "
        "interactions; against a loss that spans every item per user (CDAE) they are small"
    )
    params = {
        "n_experts": Param(30, "M experts per side"),
        "lambda_de": Param(0.01, "weight of the DE loss"),
        "lambda_rrd": Param(0.001, "weight of the RRD loss"),
        "K": Param(40, "interesting items per user"),
        "L": Param(40, "uninteresting items per user"),
        "T": Param(10.0, "temperature of p(r) ∝ exp(-r/T) over the teacher's top N_max"),
        "n_max": Param(500, "N_max, the teacher's top items interesting ones are drawn from"),
        "use_de": Param(True, "the DE term (false: RRD alone)"),
        "use_rrd": Param(True, "the RRD term (false: DE alone)"),
    }

    def extra_setup(self, teacher, student, data):
        for role, m in (("teacher", teacher), ("student", student)):
            if not hasattr(m, "user_repr"):
                raise CellError(
                    f"de-rrd: the {role} model {type(m).__name__} has no user/item representations "
                    "(two-tower models have them: bpr, cdae, caser)"
                )
        example = data.split("users").head(2)
        with torch.no_grad():
            d_s, d_t = student.user_repr(example).shape[1], teacher.user_repr(example).shape[1]
        device = next(student.parameters()).device
        m = int(self.hparams["n_experts"])
        self.user_experts = Experts(m, d_s, d_t).to(device)
        self.item_experts = Experts(m, d_s, d_t).to(device)
        self.n_items = int(data.info["n_items"])
        if self.per_user:  # (the frozen teacher's user representations, once)
            with torch.no_grad():
                everyone = torch.arange(len(self.trained), device=device)
                parts = [teacher.user_repr({"user": u}).float() for u in everyone.split(1024)]
                self.t_users = torch.cat(parts)
        self.epoch_drawn: int | None = None
        self.drawn: tuple[torch.Tensor, ...] = ()
        return [*self.user_experts.parameters(), *self.item_experts.parameters()]

    def rrd_draw(self, view: TeacherView) -> tuple[torch.Tensor, ...]:
        """For every row of `view`: K interesting items (from the top N_max with
        p(r) ∝ exp(−r/T), in teacher order) and L uninteresting ones (uniform from the
        rest), each with its validity, and the interesting items' diagnostics
        (`sample_stats`)."""
        hp = self.hparams
        n_max = min(int(hp["n_max"]), view.order.shape[1] - 1)
        top = view.order[:, :n_max]  # teacher's top items (unobserved first)
        ranks = torch.arange(1, n_max + 1, device=top.device, dtype=torch.float32)
        w = torch.exp(-ranks / hp["T"])[None, :] * (view.rank.gather(1, top) > 0)
        pos, _ = draw(w, int(hp["K"]))
        interesting = top.gather(1, pos.sort(dim=1).values)  # in teacher order
        interesting_valid = view.rank.gather(1, interesting) > 0
        rest = view.rank > n_max
        few = ~rest.any(dim=1)
        if bool(few.any()):  # fewer unobserved items than N_max: the ones not drawn
            fallback = (view.rank > 0).scatter(1, interesting, False)
            rest = torch.where(few[:, None], fallback, rest)
        stats = self.sample_stats(view.n_unobserved, view.rank.gather(1, interesting), interesting_valid)
        return (interesting, interesting_valid, *draw_uniform(rest, int(hp["L"])), stats)

    def tau(self, epoch: int, epochs: int) -> float:
        """The official T_annealing: from 1 at the first epoch to 1e-10 at the last,
        geometrically, over the training's own length (the official code's max_epoch)."""
        return max(1e-10, 1e-10 ** (epoch / max(epochs, 1)))

    def loss(self, step):
        hp, n = self.hparams, len(step.batch["user"])
        terms = {"task": step.task_loss}
        # the batch's unique users (instances, for context models), as the official code;
        # both terms are sums over them, divided by the batch's rows (module docstring)
        rows = self.rows(step)
        if hp["use_de"]:
            terms["de"] = hp["lambda_de"] * self.de_loss(step, rows) / n
        if hp["use_rrd"]:
            terms["rrd"] = hp["lambda_rrd"] * self.rrd_loss(step, rows) / n
        step.log_terms(**terms)
        return sum(terms.values())

    def de_loss(self, step: Step, rows: Rows) -> torch.Tensor:
        """L_DE over the rows' users and the batch's (and drawn) items, summed."""
        tau = self.tau(step.epoch, step.epochs)
        batch, users = step.batch, rows.users
        items = [torch.unique(batch["item"])] if "item" in batch else []
        items.append(torch.unique(torch.randint(1, self.n_items, (len(users),), device=users.device)))
        state = step.student_out
        if rows.batch is batch and isinstance(state, StepState):
            s_u = state.repr  # (the step's forward pass: its one draw of input corruption)
        else:
            s_u = step.student.user_repr(rows.batch)
        with torch.no_grad():
            t_u = self.t_users.index_select(0, users) if self.per_user else step.teacher.user_repr(rows.batch)
            t_i = [step.teacher.item_repr(i) for i in items]
        de = ((t_u - self.user_experts(s_u, t_u, tau)) ** 2).sum()
        item_terms = [
            ((t - self.item_experts(step.student.item_repr(i), t, tau)) ** 2).sum()
            for i, t in zip(items, t_i, strict=True)
        ]
        return de + sum(item_terms) / len(item_terms)  # ½(positive + drawn) or the drawn alone

    def rrd_loss(self, step: Step, rows: Rows) -> torch.Tensor:
        """L_RRD summed over the rows, and its sample's diagnostics."""
        if self.per_user:
            if self.epoch_drawn != step.epoch:  # once per epoch, as the official URRD_sampling
                self.drawn = self.rrd_draw(self.view)
                self.epoch_drawn = step.epoch
            inter, iv, unint, uv, stats = (x.index_select(0, rows.users) for x in self.drawn)
        else:  # each instance's own context, in the step
            inter, iv, unint, uv, stats = self.rrd_draw(self.context_view(step))
        s = student_score(step, rows, torch.cat([inter, unint], dim=1))
        s_i, s_j = s[:, : inter.shape[1]], s[:, inter.shape[1] :]
        s_i = s_i.masked_fill(~iv, float("-inf"))
        s_j = s_j.masked_fill(~uv, float("-inf"))
        tail = torch.logcumsumexp(s_i.flip(1), dim=1).flip(1)  # log Σ_{l≥k} e^{s_l}
        denom = torch.logaddexp(tail, torch.logsumexp(s_j, dim=1, keepdim=True))
        step.log_stats(
            sample_size=stats[:, 0].mean() + uv.float().sum(1).mean(),
            sample_rank_pct=stats[:, 1].sum() / stats[:, 0].sum().clamp(min=1),
        )
        return -torch.where(iv, s_i - denom, torch.zeros_like(s_i)).sum()


DISTILLERS: tuple[type[Distiller], ...] = (RD, RDRank, CD, CDTG, CDSG, DERRD)
