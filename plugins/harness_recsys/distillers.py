"""Ranking distillers: RD and RD-Rank (Tang & Wang 2018), CD-Base, CD-TG and CD-SG
(seed 002), DE-RRD (seed 003). Notation: s student score (logit), t teacher score,
σ the sigmoid, I_u^- the items user u has not trained on. Every loss is a sum over a
row's items, averaged over the batch's rows (a row is a training interaction, or a user
for models that train on users, e.g. CDAE), like the models' own losses.

RD      L = (1−ρ)·L_CF + ρ·L_RD, L_CF the model's own loss,
        L_RD = −Σ_{r=1..K} w_r·log σ(s_{π_r}), π_1..π_K the teacher's top K of I_u^-;
        w_r = exp(−r/λ) / Σ_k exp(−k/λ) (position weight); from `dynamic_start` on,
        times the dynamic weight max(0, tanh(μ·(r̂_r − r))), r̂_r the student's rank of
        π_r estimated from `n_estimate` uniformly drawn items of I_u^-:
        r̂ = ⌊(|I_u^-|−1)·#{j: s_j > s_{π_r}} / n⌋; the product is renormalised per row
        and detached (RD's official code, github graytowne/rank_distill).
RD-Rank the same loss on K items drawn by CD's rank-aware sampling from the teacher's
        ranking (seed 002), weighted by their order in the teacher's ranking.
CD-*    L = L_CF + λ·L_KD (seed 002, eqs. 5-7, 13):
        L_CF = −Σ_{i∈I_u^+} log σ(s_ui) (selective: observed items only; a row's item,
        or every training item of a user row),
        L_KD = Σ_{i∈S} BCE(σ(s_ui), q_ui), q_ui = σ((t_ui + T2)/T1), S ⊂ I_u^- of size
        K (`sample_size`, or `sample_ratio`·|I_u^+| per user as the paper's 0.8·|I_u|):
        CD-Base uniform; CD-TG rank-aware on the teacher's ranking; CD-SG rank-aware on
        the student's current ranking (each step), the teacher asked for the scores.
DE-RRD  L = L_CF + λ_DE·L_DE + λ_RRD·L_RRD (seed 003; official code
        github SeongKu-Kang/DE-RRD_CIKM20):
        DE: M experts per side (users, items), each d_s → ⌊(d_s+d_t)/2⌋ → d_t with ReLU,
        over the batch's unique users (rows, for context models like Caser) and items;
        a selection network α = softmax(W·t_e) on the teacher's representation picks an
        expert by Gumbel-softmax with temperature τ_e = max(1e-10, 1e-10^(e/1000));
        L_DE = ‖t_u − Σ_m z_m E_m(s_u)‖² + ½(‖…‖² on the row's positive item and on one
        uniformly drawn item), representations from `user_repr`/`item_repr`.
        RRD: per user and epoch, K interesting items drawn from the teacher's top
        N_max of I_u^- with p(r) ∝ exp(−r/T), kept in teacher order, and L uninteresting
        items drawn uniformly from the rest of I_u^-;
        L_RRD = −Σ_k [s_{i_k} − log(Σ_{l≥k} e^{s_{i_l}} + Σ_j e^{s_j})] (computed with
        log-sum-exp, so no clamping is needed).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import Distiller, Param, Step
from harness.errors import CellError, UsageError

from .teacher import TeacherView, draw, rank_unobserved, rank_weights, teacher_view, uniform_unobserved

LAWS = ("linear", "exponential")


def positives(batch: dict[str, torch.Tensor], data_history: torch.Tensor) -> torch.Tensor:
    """[B, P] the row's observed items: its item, or every training item of a user row
    (padded with 0, the padding item, which callers mask)."""
    if "item" in batch:
        return batch["item"][:, None]
    return data_history.index_select(0, batch["user"])


def unique_users(
    batch: dict[str, torch.Tensor], model: nn.Module
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The batch reduced to its unique users, and the index mapping rows back to them,
    when the model's scores depend on the user alone; else the batch itself and None."""
    if not getattr(model, "user_only", False):
        return batch, None
    users, inverse = torch.unique(batch["user"], return_inverse=True)
    return {"user": users}, inverse


class RankingDistiller(Distiller):
    tasks = frozenset({"ranking"})
    needs = frozenset({"teacher", "scores"})

    view: TeacherView
    history: torch.Tensor
    trained: torch.Tensor

    def setup(self, teacher, student, data, example):
        if teacher is None:
            raise CellError(f"{self.name} needs a trained teacher")
        self.view = teacher_view(teacher, data)
        self.history = data.split("history")["items"]
        self.trained = data.split("history")["mask"]
        return self.extra_setup(teacher, student, data)

    def extra_setup(self, teacher, student, data) -> list[nn.Parameter]:
        return []

    def per_epoch(
        self, step: Step, law: str, k: int, gamma: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Items drawn from the teacher's ranking (or uniformly) once per user and epoch,
        for the batch's rows: [B, k] items and valid. Every row of a user shares the
        epoch's draw, as a user-row model (CDAE) draws once per user and epoch; drawing
        once for all users costs one [n_users, n_items] draw per epoch, not one per step."""
        key = (step.epoch, law, k)
        if getattr(self, "_table_key", None) != key:
            w = rank_weights(self.view.rank, self.view.n_unobserved, law, gamma)
            self._table = draw(w, k)
            self._table_key = key
        users = step.batch["user"]
        return self._table[0].index_select(0, users), self._table[1].index_select(0, users)

    def student_draw(self, step: Step, law: str, k: int, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """k items per row drawn by the student's current ranking of its unobserved
        items. When the scores depend on the user alone, the batch's unique users are
        ranked and drawn for once (rows of one user share the step's draw)."""
        batch, inverse = unique_users(step.batch, step.student)
        with torch.no_grad():
            scores = step.student(batch)
        _, rank, n = rank_unobserved(scores, self.trained.index_select(0, batch["user"]))
        items, valid = draw(rank_weights(rank, n, law, gamma), k)
        if inverse is None:
            return items, valid
        return items.index_select(0, inverse), valid.index_select(0, inverse)


# --------------------------------------------------------------------------- RD


class RD(RankingDistiller):
    name = "rd"
    label = "RD"
    description = "ranking distillation (Tang & Wang 2018): the teacher's top-K as weighted positives"
    params = {
        "K": Param(10, "items of the teacher's top list (RD's default 10; seed 002: 15 for CDAE)"),
        "rho": Param(0.5, "weight of the distillation loss: (1-rho)·L_CF + rho·L_RD"),
        "lambda_": Param(1.0, "position-weight temperature λ in exp(-r/λ)"),
        "mu": Param(0.1, "slope μ of the dynamic weight"),
        "n_estimate": Param(100, "items drawn to estimate the student's ranks"),
        "dynamic_start": Param(10, "first epoch with the dynamic weight (a large value turns it off)"),
    }

    @classmethod
    def check(cls, params, where):
        if params["K"] < 1:
            raise UsageError(f"{where}.K: must be at least 1")
        if not 0 <= params["rho"] <= 1:
            raise UsageError(f"{where}.rho: must be in [0, 1], got {params['rho']}")

    def items(self, step: Step) -> torch.Tensor:
        """[B, K] the items to distil, in teacher order."""
        if getattr(self, "_top", None) is None or self._top.shape[1] != self.hparams["K"]:
            self._top = self.view.order[:, : self.hparams["K"]].contiguous()  # once per teacher
        return self._top.index_select(0, step.batch["user"])

    def rd_loss(self, step: Step, items: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        hp = self.hparams
        K = items.shape[1]
        s = step.student.score(step.batch, items)
        r = torch.arange(K, device=s.device, dtype=s.dtype)
        w = torch.exp(-(r + 1) / hp["lambda_"])[None, :].expand_as(s)
        if valid is not None:
            w = w * valid
        if step.epoch >= hp["dynamic_start"]:
            with torch.no_grad():
                users = step.batch["user"]
                probe = uniform_unobserved(self.trained, users, hp["n_estimate"])
                s_probe = step.student.score(step.batch, probe)
                above = (s_probe[:, None, :] > s.detach()[:, :, None]).sum(-1).float()
                n_u = self.view.n_unobserved[users].float()[:, None]
                r_hat = torch.floor((n_u - 1) * above / probe.shape[1])
                w = w * torch.clamp(torch.tanh(hp["mu"] * (r_hat - r[None, :])), min=0)
        w = (w / w.sum(dim=1, keepdim=True).clamp(min=1e-12)).detach()
        kd = -(w * F.logsigmoid(s)).sum(dim=1).mean()
        return (1 - hp["rho"]) * step.task_loss + hp["rho"] * kd

    def loss(self, step):
        items = self.items(step)
        # (a user with fewer than K unobserved items: the rest of the list is not theirs)
        valid = self.view.rank[step.batch["user"][:, None], items] > 0
        return self.rd_loss(step, items, valid.float())


class RDRank(RD):
    name = "rd-rank"
    label = "RD-Rank"
    description = "RD's loss on items drawn by CD's rank-aware sampling from the teacher (seed 002)"
    params = {
        **RD.params,
        "law": Param("linear", "rank-aware sampling law", choices=LAWS),
        "gamma": Param(1.0, "slope γ of the exponential law"),
    }

    def loss(self, step):
        items, valid = self.per_epoch(step, self.hparams["law"], self.hparams["K"], self.hparams["gamma"])
        # position weights follow the drawn items' order in the teacher's ranking
        rank = self.view.rank[step.batch["user"][:, None], items]
        order = rank.masked_fill(~valid, torch.iinfo(rank.dtype).max).argsort(dim=1)
        return self.rd_loss(step, items.gather(1, order), valid.gather(1, order).float())


# --------------------------------------------------------------------------- CD


class CD(RankingDistiller):
    """CD-Base (uniform sampling); CD-TG and CD-SG below."""

    name = "cd-base"
    label = "CD-Base"
    description = "collaborative distillation (seed 002), items sampled uniformly"
    guide: ClassVar[str] = "uniform"
    params = {
        "lambda_": Param(0.5, "weight λ of the KD loss (seed 002: 0.5)"),
        "T1": Param(1.0, "temperature scale T1 of q = σ((t + T2)/T1) (seed 002: CDAE 2, Caser 1)"),
        "T2": Param(0.0, "temperature shift T2 (seed 002: CDAE 1, Caser 0)"),
        "sample_size": Param(50, "K, items sampled per row (seed 002: 50 for Caser)"),
        "sample_ratio": Param(
            0.0, "if > 0, K = ratio·|I_u^+| per user instead (seed 002: 0.8 for CDAE on ML100K)"
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

    def extra_setup(self, teacher, student, data):
        # the widest K any user gets: one draw width for every batch (a per-epoch table)
        self.k_max = int(
            self.sample_sizes(torch.arange(self.trained.shape[0], device=self.trained.device)).max()
        )
        return []

    def sample_sizes(self, users: torch.Tensor) -> torch.Tensor:
        """K per row."""
        ratio = self.hparams["sample_ratio"]
        if ratio > 0:
            n_pos = self.trained.index_select(0, users).sum(dim=1)
            return torch.ceil(ratio * n_pos.float()).long().clamp(min=1)
        return torch.full_like(users, int(self.hparams["sample_size"]))

    def sample(self, step: Step, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, k] items of I_u^- to distil and their validity: uniform (CD-Base) or
        rank-aware on the teacher's ranking (CD-TG), drawn per user and epoch; or
        rank-aware on the student's current ranking of the row (CD-SG), every step."""
        hp = self.hparams
        if self.guide == "student":
            return self.student_draw(step, hp["law"], k, hp["gamma"])
        law = "uniform" if self.guide == "uniform" else hp["law"]
        return self.per_epoch(step, law, k, hp["gamma"])

    def loss(self, step):
        hp = self.hparams
        batch, users = step.batch, step.batch["user"]
        ks = self.sample_sizes(users)
        items, valid = self.sample(step, self.k_max)
        valid = valid & (torch.arange(items.shape[1], device=items.device)[None, :] < ks[:, None])
        pos = positives(batch, self.history)
        s = step.student.score(batch, torch.cat([pos, items], dim=1))
        s_pos, s_kd = s[:, : pos.shape[1]], s[:, pos.shape[1] :]
        if hp["cf_loss"] == "selective":
            cf = -(F.logsigmoid(s_pos) * (pos > 0)).sum(dim=1).mean()
        else:
            cf = step.task_loss
        with torch.no_grad():
            t = self.view.scores[users[:, None], items]
            q = torch.sigmoid((t + hp["T2"]) / hp["T1"])
        kd = (F.binary_cross_entropy_with_logits(s_kd, q, reduction="none") * valid).sum(dim=1).mean()
        return cf + hp["lambda_"] * kd


class CDTG(CD):
    name = "cd-tg"
    label = "CD-TG"
    description = "collaborative distillation, teacher-guided rank-aware sampling (seed 002)"
    guide = "teacher"


class CDSG(CD):
    name = "cd-sg"
    label = "CD-SG"
    description = "collaborative distillation, student-guided rank-aware sampling (seed 002)"
    guide = "student"


# --------------------------------------------------------------------------- DE-RRD


class Experts(nn.Module):
    """M experts d_s → h → d_t (ReLU), evaluated together, and the selection network."""

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

    def forward(self, s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
        """Σ_m z_m·E_m(s), z the Gumbel-softmax of the selection over experts."""
        hidden = torch.relu(torch.einsum("bd,mdh->bmh", s, self.w1) + self.b1)
        out = torch.einsum("bmh,mht->bmt", hidden, self.w2) + self.b2  # [B, M, d_t]
        alpha = torch.softmax(self.select(t), dim=1)
        u = torch.rand_like(alpha)
        gumbel = -torch.log(-torch.log(u + 1e-10) + 1e-10)
        z = torch.softmax((torch.log(alpha + 1e-10) + gumbel) / tau, dim=1)
        return (z[:, :, None] * out).sum(dim=1)


class DERRD(RankingDistiller):
    name = "de-rrd"
    label = "DE-RRD"
    description = "distillation experts + relaxed ranking distillation (seed 003, Kang et al. 2020)"
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
        self.epoch_drawn: int | None = None
        return [*self.user_experts.parameters(), *self.item_experts.parameters()]

    def draw_epoch(self) -> None:
        """Each user's interesting and uninteresting items for this epoch."""
        hp, view = self.hparams, self.view
        n_max = min(int(hp["n_max"]), view.order.shape[1] - 1)
        top = view.order[:, :n_max]  # teacher's top items (unobserved first)
        ranks = torch.arange(1, n_max + 1, device=top.device, dtype=torch.float32)
        w = torch.exp(-ranks / hp["T"])[None, :] * (view.rank.gather(1, top) > 0)
        pos, _ = draw(w, int(hp["K"]))
        self.interesting = top.gather(1, pos.sort(dim=1).values)  # in teacher order
        self.interesting_valid = view.rank.gather(1, self.interesting) > 0
        rest = (view.rank > n_max).float()
        few = rest.sum(dim=1) < 1
        if bool(few.any()):  # fewer unobserved items than N_max: the ones not drawn
            fallback = (view.rank > 0).float().scatter(1, self.interesting, 0.0)
            rest = torch.where(few[:, None], fallback, rest)
        self.uninteresting, self.uninteresting_valid = draw(rest, int(hp["L"]))

    def tau(self, epoch: int) -> float:
        return max(1e-10, 1e-10 ** (epoch / 1000))

    def loss(self, step):
        hp, batch = self.hparams, step.batch
        users = batch["user"]
        total = step.task_loss
        if hp["use_de"]:
            # over the batch's unique users and items, as the official code
            tau = self.tau(step.epoch)
            ub, _ = unique_users(batch, step.student)
            items = [torch.unique(batch["item"])] if "item" in batch else []
            items.append(torch.randint(1, self.n_items, (len(ub["user"]),), device=users.device))
            s_u = step.student.user_repr(ub)
            with torch.no_grad():
                t_u = step.teacher.user_repr(ub)
                t_i = [step.teacher.item_repr(i) for i in items]
            de = ((t_u - self.user_experts(s_u, t_u, tau)) ** 2).sum(dim=1).mean()
            item_terms = [
                ((t - self.item_experts(step.student.item_repr(i), t, tau)) ** 2).sum(dim=1).mean()
                for i, t in zip(items, t_i, strict=True)
            ]
            de = de + sum(item_terms) / len(item_terms)  # ½(positive + drawn) or the drawn alone
            total = total + hp["lambda_de"] * de
        if hp["use_rrd"]:
            if self.epoch_drawn != step.epoch:
                self.draw_epoch()
                self.epoch_drawn = step.epoch
            inter = self.interesting.index_select(0, users)
            iv = self.interesting_valid.index_select(0, users)
            unint = self.uninteresting.index_select(0, users)
            uv = self.uninteresting_valid.index_select(0, users)
            s = step.student.score(batch, torch.cat([inter, unint], dim=1))
            s_i, s_j = s[:, : inter.shape[1]], s[:, inter.shape[1] :]
            s_i = s_i.masked_fill(~iv, float("-inf"))
            s_j = s_j.masked_fill(~uv, float("-inf"))
            tail = torch.logcumsumexp(s_i.flip(1), dim=1).flip(1)  # log Σ_{l≥k} e^{s_l}
            denom = torch.logaddexp(tail, torch.logsumexp(s_j, dim=1, keepdim=True))
            rrd = -torch.where(iv, s_i - denom, torch.zeros_like(s_i)).sum(dim=1).mean()
            total = total + hp["lambda_rrd"] * rrd
        return total


DISTILLERS: tuple[type[Distiller], ...] = (RD, RDRank, CD, CDTG, CDSG, DERRD)
