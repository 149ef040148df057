"""SAD: Show, Attend and Distill (Ji, Heo & Park, AAAI 2021), as Bharadhwaj et al. (2024) use it.

Every teacher feature attends over every student feature; the attention weights the
distance between their spatial "value" maps, and the attention itself is learnt by
minimising that weighted distance (no detach). With n teacher and m student features,
feature dimension d:

  q_t   = BN(W^Q_t GAP(F^T_t))                               query of teacher layer t
  k_s   = ReLU(BN(W^K_s GAP(F^S_s)))                         key of student layer s
  k~_st = [BN(W^B k_s)] reshaped into one d-vector per teacher layer (shared bilinear map)
  e_ts  = (q_t · k~_st + P^T_t · P^S_s) / sqrt(d)            P^T, P^S learnt positions
  a_t.  = softmax_s(e_t.)
  v^T_t = normalise(vec(mean_c (F^T_t)^2)),  v^S_{s->t} = normalise(vec(pool_{HW_t}(mean_c (F^S_s)^2)))
  d_ts  = mean over positions of (v^S_{s->t} - v^T_t)^2
  L_att = sum_t mean_batch sum_s a_ts d_ts
  L     = task loss + alpha * KD + beta * L_att

KD is Hinton's T^2-scaled KL for classification; for ratings (no classes to soften) it
is the MSE to the teacher's prediction — a simplification stated here and in the docs.
The paper's eq. 3 omits KD, but its Table 2 lists T and alpha, which are the official
code's KD temperature and weight (docs/models.md).

Features of any layout work: [B, C, H, W] (GAP over H, W; value over H×W),
[B, C, L] (the sequence axis is the spatial one), and [B, H] (a hidden vector: its
units are the query/key input and, as a sequence of length H, the value map).
The attention parameters are trained with the student and are not deployed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import Distiller, Param, Step, probe
from harness.errors import CellError, UsageError

from .kd import kd_term


def channels_last(f: torch.Tensor) -> bool:
    """Whether `f` is a [B, C, H, W] map stored channels_last (C fastest in memory)."""
    return f.dim() == 4 and f.is_contiguous(memory_format=torch.channels_last) and not f.is_contiguous()


def gap(f: torch.Tensor) -> torch.Tensor:
    """[B, C, ...] -> [B, C] (mean over the spatial axes); [B, H] stays.

    A channels_last map is averaged through its [B, H, W, C] view, whose backward gives
    the map's gradient in channels_last too; the mean over axes 2, 3 (and `flatten(2)`,
    which copies the map) give it in the default layout. The student's feature then
    receives a default-layout gradient beside its convolutions' channels_last ones, and
    their sum and every elementwise backward op of the block after it mix layouts, which
    on a CPU is several times slower than either layout alone (benchmarks/README.md).
    Same values, bit for bit (tests/test_vision.py)."""
    if f.dim() == 2:
        return f
    if channels_last(f):
        return f.permute(0, 2, 3, 1).mean(dim=(1, 2))
    return f.mean(dim=tuple(range(2, f.dim())))


def value_map(f: torch.Tensor) -> torch.Tensor:
    """The spatial map whose normalised form is compared: mean over channels of F^2,
    [B, *spatial]; for [B, H] the squared units, [B, H]. (A channels_last map through
    its [B, H, W, C] view, for the reason `gap` gives.)"""
    if f.dim() == 2:
        return f.pow(2)
    if channels_last(f):
        return f.permute(0, 2, 3, 1).pow(2).mean(-1)
    return f.pow(2).mean(1)


def resample(v: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Adaptive average pooling of a [B, *spatial] map to `shape`."""
    if tuple(v.shape[1:]) == tuple(shape):
        return v
    if len(shape) == 2 and v.dim() == 3:
        return F.adaptive_avg_pool2d(v.unsqueeze(1), shape).squeeze(1)
    n = math.prod(shape)
    return F.adaptive_avg_pool1d(v.flatten(1).unsqueeze(1), n).squeeze(1).view(-1, *shape)


class Attention(nn.Module):
    """The query/key/bilinear/positional parameters of SAD."""

    def __init__(self, t_channels: list[int], s_channels: list[int], d: int) -> None:
        super().__init__()
        self.n, self.m, self.d = len(t_channels), len(s_channels), d
        self.query = nn.ModuleList(nn.Sequential(nn.Linear(c, d), nn.BatchNorm1d(d)) for c in t_channels)
        self.key = nn.ModuleList(
            nn.Sequential(nn.Linear(c, d), nn.BatchNorm1d(d), nn.ReLU()) for c in s_channels
        )
        self.bilinear = nn.Sequential(nn.Linear(d, self.n * d), nn.BatchNorm1d(self.n * d))
        self.p_t = nn.Parameter(torch.empty(self.n, d))
        self.p_s = nn.Parameter(torch.empty(self.m, d))
        nn.init.xavier_normal_(self.p_t)
        nn.init.xavier_normal_(self.p_s)

    def forward(self, t_feats: list[torch.Tensor], s_feats: list[torch.Tensor]) -> torch.Tensor:
        """Attention weights [B, n, m], each row summing to 1 over student layers."""
        b = t_feats[0].shape[0]
        q = torch.stack([layer(gap(f)) for layer, f in zip(self.query, t_feats, strict=True)], 1)
        k = torch.stack([layer(gap(f)) for layer, f in zip(self.key, s_feats, strict=True)], 1)
        kb = self.bilinear(k.reshape(b * self.m, self.d)).view(b, self.m, self.n, self.d)
        logits = torch.einsum("bsnd,bnd->bns", kb, q) + (self.p_t @ self.p_s.t()).unsqueeze(0)
        return F.softmax(logits / math.sqrt(self.d), dim=2)


def sad_attention_loss(
    att: torch.Tensor, t_feats: list[torch.Tensor], s_feats: list[torch.Tensor]
) -> torch.Tensor:
    """L_att = sum_t mean_batch sum_s a_ts d_ts (see the module docstring).

    Batched: the teacher layers are grouped by the shape of their value maps (3 groups in
    a WRN-40-2), each student map is pooled to each shape once, and one batched matmul gives
    d_ts for a whole group (the squared distance expanded into norms and dot products).
    `sad_attention_loss_per_layer` is the same sum one teacher layer at a time (as the
    official code computes it); the two agree within float rounding (tests/test_vision.py).
    Other layouts (the movie dcnn's [B, C, L], hidden vectors) take the per-layer form,
    so their results stay bitwise what they were.
    """
    if any(f.dim() != 4 for f in (*t_feats, *s_feats)):
        return sad_attention_loss_per_layer(att, t_feats, s_feats)
    s_values = [value_map(f) for f in s_feats]
    groups: dict[tuple[int, ...], list[int]] = {}
    for t, ft in enumerate(t_feats):
        groups.setdefault(tuple(ft.shape[2:]), []).append(t)
    total = att.new_zeros(())
    for shape, idx in groups.items():
        vt = torch.stack([F.normalize(value_map(t_feats[t]).flatten(1), dim=1) for t in idx], 1)
        vs = torch.stack([F.normalize(resample(v, shape).flatten(1), dim=1) for v in s_values], 1)
        # mean_p (v_s - v_t)^2 = (|v_s|^2 + |v_t|^2 - 2 v_t . v_s) / P: one batched matmul
        # instead of a [B, teacher layers, m, P] difference
        cross = torch.bmm(vt, vs.transpose(1, 2))
        sq = vt.pow(2).sum(2).unsqueeze(2) + vs.pow(2).sum(2).unsqueeze(1)
        dist = (sq - 2 * cross) / vt.shape[2]  # [B, teacher layers, m]
        total = total + (att[:, idx] * dist).sum(2).mean(0).sum()
    return total


def sad_attention_loss_per_layer(
    att: torch.Tensor, t_feats: list[torch.Tensor], s_feats: list[torch.Tensor]
) -> torch.Tensor:
    """`sad_attention_loss` one teacher layer at a time (the reference for its tests)."""
    s_values = [value_map(f) for f in s_feats]
    total = att.new_zeros(())
    for t, ft in enumerate(t_feats):
        vt = value_map(ft)
        shape = tuple(vt.shape[1:])
        vt = F.normalize(vt.flatten(1), dim=1)
        dist = torch.stack(
            [(F.normalize(resample(vs, shape).flatten(1), dim=1) - vt).pow(2).mean(1) for vs in s_values], 1
        )  # [B, m]
        total = total + (att[:, t] * dist).sum(1).mean()
    return total


class SAD(Distiller):
    name = "sad"
    label = "SAD"
    description = "Show, Attend and Distill: attention-weighted feature matching + KD"
    tasks = frozenset({"classification", "rating"})
    needs = frozenset({"teacher", "logits", "features"})
    params = {
        "alpha": Param(0.9, "weight of the KD term"),
        "T": Param(4.0, "KD temperature (classification)"),
        "beta": Param(200.0, "weight of the attention (feature) loss"),
        "d": Param(128, "query/key dimension"),
    }

    @classmethod
    def check(cls, params, where):
        if params["T"] <= 0:
            raise UsageError(f"{where}.T: must be positive")
        if params["d"] < 1:
            raise UsageError(f"{where}.d: must be at least 1")

    def setup(self, teacher, student, data, example):
        """Size the attention from one forward pass of each model on an example batch."""
        t, s = probe(teacher, example, data.task), probe(student, example, data.task)
        if not t.features or not s.features:
            raise CellError("SAD needs features from both models; one returned none")
        channels = [[shape[0] for shape in p.features] for p in (t, s)]
        self.attention = Attention(channels[0], channels[1], self.hparams["d"]).to(s.device)
        return list(self.attention.parameters())

    def loss(self, step: Step) -> torch.Tensor:
        p = self.hparams
        att = self.attention(step.teacher_features, step.student_features)
        l_att = sad_attention_loss(att, step.teacher_features, step.student_features)
        kd = kd_term(step.student_out, step.teacher_out, step.task, p["T"])
        step.log_terms(kd=p["alpha"] * kd, attention=p["beta"] * l_att)
        return step.task_loss + p["alpha"] * kd + p["beta"] * l_att
