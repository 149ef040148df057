"""What the ranking distillers take from a trained teacher, computed once per teacher.

`teacher_view(teacher, data)` scores every item for every user (through the "users"
split: each user's latest training context) and ranks, per user, the items the user
has not trained on. It depends on the teacher's weights and the data only, so it is
computed once and shared by every epoch and by every cell of the process that uses the
same teacher (keyed by a hash of the teacher's weights).

Samplers over a user's unobserved items I_u^- (Lee et al., "Collaborative
Distillation for Top-N Recommendation", ICDM 2019, Section III-C), with
π(i) = rank(i)/|I_u^-|, rank 1 = the top item:
  uniform      K items drawn uniformly without replacement            (CD-Base)
  algorithm1   the paper's Algorithm 1 as printed: scan I_u^- in rank order; for each
               item i draw j uniformly from I_u^- (with replacement) and keep i when
               rank(i) < rank(j); stop at K kept items. Item i is kept with
               probability (|I_u^-| − rank(i))/|I_u^-| = 1 − π(i) *given that the scan
               reaches it*, so for K small against |I_u^-| the sample is nearly the
               top items, thinned; for K ≥ |I_u^-|/2 the scan usually ends first and
               each item is kept independently with probability 1 − π(i) (about
               |I_u^-|/2 items). The exponential law changes line 4's draw so that
               i is kept with probability exp(−γ·π(i)) (`law="exponential"`).
  weighted     eq. (9)/(10) read as a sampling distribution: K items drawn without
               replacement with p_i ∝ 1 − π(i) (or exp(−γ·π(i))). This is the law of
               one acceptance, not of Algorithm 1's sample; kept as an option.
The scan's random draws are made for every position at once (one uniform per position),
and the first K acceptances kept: the same law as the loop, without a Python loop; only
as many positions are ranked and drawn as the scan needs (`scan`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from harness.api import DataBundle
from harness.errors import CellError


@dataclass
class TeacherView:
    scores: torch.Tensor  # [n_users, n_items] teacher scores; -inf on trained items and padding
    order: torch.Tensor  # [n_users, n_items] item ids by descending teacher score
    rank: torch.Tensor  # [n_users, n_items] 1-based rank among unobserved items; 0 if trained
    n_unobserved: torch.Tensor  # [n_users]


_VIEWS: dict[str, TeacherView] = {}


def fingerprint(model: nn.Module) -> str:
    h = hashlib.sha1()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def rank_unobserved(
    scores: torch.Tensor, trained: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Order, 1-based rank among unobserved items (0 where trained or padding) and the
    number of unobserved items, per row of `scores` [B, N] given `trained` [B, N]."""
    masked = scores.masked_fill(trained, float("-inf"))
    masked[:, 0] = float("-inf")
    order = masked.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    unobserved = ~trained
    unobserved[:, 0] = False
    rank = rank * unobserved
    return order, rank, unobserved.sum(dim=1)


@torch.no_grad()
def teacher_view(teacher: nn.Module, data: DataBundle, batch_size: int = 256) -> TeacherView:
    key = f"{fingerprint(teacher)}|{data.info.get('fingerprint')}|{next(teacher.parameters()).device}"
    if key in _VIEWS:
        return _VIEWS[key]
    if len(_VIEWS) >= 4:
        _VIEWS.pop(next(iter(_VIEWS)))
    was = teacher.training
    teacher.eval()
    trained = data.split("history")["mask"]
    n_users, n_items = trained.shape
    scores = torch.full((n_users, n_items), float("-inf"), device=trained.device)
    for batch in data.split("users").batches(batch_size):
        scores[batch["user"]] = teacher(batch).float()
    teacher.train(was)
    if not bool(torch.isfinite(scores[data.split("users")["user"]]).all()):
        raise CellError("the teacher's scores are not finite")
    order, rank, n_unobserved = rank_unobserved(scores, trained)
    scores = scores.masked_fill(rank == 0, float("-inf"))
    view = TeacherView(scores, order, rank, n_unobserved)
    _VIEWS[key] = view
    return view


def rank_weights(
    rank: torch.Tensor, n_unobserved: torch.Tensor, law: str, gamma: float = 1.0
) -> torch.Tensor:
    """Sampling weights of Lee et al.'s (ICDM 2019) eqs. 9/10 from 1-based ranks (0 = not a candidate)."""
    pi = rank.float() / n_unobserved.clamp(min=1)[:, None].float()
    if law == "linear":
        w = 1.0 - pi
    elif law == "exponential":
        w = torch.exp(-gamma * pi)
    elif law == "uniform":
        w = torch.ones_like(pi)
    else:
        raise ValueError(f"unknown sampling law {law!r}")
    return w * (rank > 0)


def first_accepted(
    accept: torch.Tensor, order: torch.Tensor, k: torch.Tensor | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k[row] accepted positions of each row of `accept` [B, W] (positions in
    scan order), as items of `order` [B, W]: items [B, w] and valid [B, w], w the
    largest number kept in any row (at least 1)."""
    k = torch.as_tensor(k, device=accept.device).reshape(-1, 1) if not isinstance(k, int) else k
    keep = accept & (accept.cumsum(dim=1) <= k)
    width = max(1, int(keep.sum(dim=1).max()))
    big = accept.shape[1]
    pos = torch.arange(big, device=accept.device).expand_as(accept)
    first = torch.where(keep, pos, torch.full_like(pos, big)).topk(width, dim=1, largest=False).values
    valid = first < big
    first = first.clamp(max=big - 1)
    return order.gather(1, first), valid


def scan_accepts(u: torch.Tensor, n: torch.Tensor, law: str = "linear", gamma: float = 1.0) -> torch.Tensor:
    """Algorithm 1's acceptances [B, w] at scan positions 1..w from uniforms `u` [B, w]:
    linear, line 4 as printed (j uniform on 1..n, keep position i when i < j);
    exponential, keep i with probability exp(−γ·i/n). Positions beyond the row's n
    unobserved items are never kept."""
    rank = torch.arange(1, u.shape[1] + 1, device=u.device).expand_as(u)
    if law == "linear":
        accept = rank < (u * n).long() + 1
    elif law == "exponential":
        accept = u < torch.exp(-gamma * rank.float() / n.clamp(min=1).float())
    else:
        raise ValueError(f"unknown sampling law {law!r}")
    return accept & (rank <= n)


def scan(
    head: Callable[[int], torch.Tensor],
    full: Callable[[int], torch.Tensor],
    n: torch.Tensor,
    width: int,
    k: torch.Tensor | int,
    law: str,
    gamma: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's scan over each row's n[row] unobserved items (n [B, 1]; W = width
    positions at most), given
    `head(w)`, the rows' first w items in rank order, and `full(W)`, all W of them.
    For K small against |I_u^-| the scan ends after about K/(1 − K/(2N)) positions:
    only the first 2K + 64 positions are ranked and their uniforms drawn ([B, 2K + 64]);
    if a row has not kept K items by then, the uniforms of the positions beyond are
    drawn ([B, W − 2K − 64]) and the whole ranking scanned. Same law as one uniform
    per position of the whole ranking (the uniforms are independent)."""
    rows, device = n.shape[0], n.device
    short = min(width, 2 * (k if isinstance(k, int) else int(k.max())) + 64)
    u = torch.rand((rows, short), device=device, generator=generator)
    if short < width:
        accept = scan_accepts(u, n, law, gamma)
        k_col = k if isinstance(k, int) else k.reshape(-1, 1).to(device)
        if bool(((accept.sum(dim=1, keepdim=True) >= k_col) | (n <= short)).all()):
            return first_accepted(accept, head(short), k)
        u = torch.cat([u, torch.rand((rows, width - short), device=device, generator=generator)], dim=1)
    return first_accepted(scan_accepts(u, n, law, gamma), full(width), k)


def algorithm1(
    order: torch.Tensor,
    n_unobserved: torch.Tensor,
    k: torch.Tensor | int,
    law: str = "linear",
    gamma: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-aware sampling by Algorithm 1 of Lee et al. (ICDM 2019), module docstring.

    order [B, W]: items by descending score, the row's unobserved items first (its
    first n_unobserved[row] entries, ranks 1..n); k: items to keep per row (int or
    [B]). Returns items [B, w] in rank order and valid [B, w]."""
    n = n_unobserved.reshape(-1, 1).to(order.device)
    width = int(min(order.shape[1], max(1, int(n.max()))))
    return scan(lambda w: order[:, :w], lambda w: order[:, :w], n, width, k, law, gamma, generator)


def algorithm1_by_scores(
    scores: torch.Tensor,
    trained: torch.Tensor,
    k: torch.Tensor | int,
    law: str = "linear",
    gamma: float = 1.0,
    n_unobserved: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`algorithm1` on the ranking by `scores` [B, N] of each row's unobserved items
    (`trained` [B, N]; item 0 is padding; `n_unobserved` [B] their counts, if known),
    without sorting whole rows when the scan stops early: one top-k of the first
    2K + 64 (`scan`). Scores tied exactly may come in another order than the stable
    sort's (a top-k does not break ties by item id)."""
    masked = scores.masked_fill(trained, float("-inf"))
    masked[:, 0] = float("-inf")
    n = (~trained[:, 1:]).sum(dim=1) if n_unobserved is None else n_unobserved
    n = n.reshape(-1, 1).to(scores.device)

    def full(w: int) -> torch.Tensor:
        return masked.argsort(dim=1, descending=True, stable=True)[:, :w]

    width = int(min(scores.shape[1], max(1, int(n.max()))))
    return scan(lambda w: masked.topk(w, dim=1).indices, full, n, width, k, law, gamma)


def draw(weights: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k items per row drawn without replacement with probability ∝ weights (successive
    draws, as torch.multinomial makes them), by the Gumbel-top-k trick: the k largest
    log w_i + G_i, G_i ~ Gumbel(0, 1), are such a sample (Kool et al. 2019), and one
    top-k costs far less than multinomial's sampling on a [B, n_items] matrix. Rows with
    fewer than k candidates get all they have. Returns items [B, k] and valid [B, k]
    (False where a row ran out of candidates)."""
    k = max(1, min(k, weights.shape[1]))
    u = torch.rand_like(weights, dtype=torch.float32).clamp_(min=1e-20)
    keys = torch.log(weights.float()) - torch.log(-torch.log(u))
    items = keys.topk(k, dim=1).indices
    return items, weights.gather(1, items) > 0


def draw_uniform(candidates: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k of each row's candidates (`candidates` [B, N] bool) uniformly without
    replacement; rows with fewer than k get all they have. Returns items [B, k] and
    valid [B, k].

    When the rows have enough candidates that about 2k + 16 of them are met in a
    quarter of the catalogue's draws, by rejection (`draw_by_rejection`: a few draws
    per sampled item instead of a uniform for every item of the catalogue); else as
    `draw(candidates.float(), k)` without its logarithms: with equal weights the Gumbel
    keys −log(−log u) order the candidates as u itself does, so the k largest uniforms
    among each row's candidates are that sample."""
    n_items = candidates.shape[1]
    k = max(1, min(k, n_items))
    fewest = int(candidates.sum(dim=1).min())
    width = math.ceil((2 * k + 16) * n_items / max(fewest, 1))
    if fewest >= 4 * k and 4 * width <= n_items:
        drawn = draw_by_rejection(candidates, k, width)
        if drawn is not None:
            return drawn
    u = torch.rand(candidates.shape, device=candidates.device).clamp_(min=1e-20)
    items = u.masked_fill_(~candidates, -1.0).topk(k, dim=1).indices
    return items, candidates.gather(1, items)


def draw_by_rejection(candidates: torch.Tensor, k: int, width: int | None = None):
    """k candidates per row uniformly without replacement, by successive uniform draws
    over the whole row with the non-candidates and repeats rejected (each accepted
    draw is uniform over the candidates not yet drawn: sampling without replacement),
    for all rows at once: `width` draws per row (default 2k + 16), the first k accepted
    kept in draw order. Rows that accept fewer than k are drawn again by the same rule,
    so the law is the same for every row. Returns (items [B, k], valid [B, k] all
    True), or None after 8 rounds if some row still falls short."""
    rows, n = candidates.shape
    width = width or 2 * k + 16
    out = torch.zeros((rows, k), dtype=torch.long, device=candidates.device)
    todo = torch.arange(rows, device=candidates.device)
    for _ in range(8):
        items = torch.randint(0, n, (len(todo), width), device=candidates.device)
        ok = candidates.index_select(0, todo).gather(1, items)
        ranked, order = items.sort(dim=1, stable=True)  # (a repeat sorts after its first draw)
        repeat = torch.zeros_like(ok)
        repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
        ok &= ~torch.zeros_like(ok).scatter_(1, order, repeat)
        done = ok.sum(dim=1) >= k
        if bool(done.any()):
            kept, _ = first_accepted(ok[done], items[done], k)
            out[todo[done]] = kept[:, :k]
            todo = todo[~done]
        if len(todo) == 0:
            return out, torch.ones_like(out, dtype=torch.bool)
    return None


def uniform_unobserved(trained: torch.Tensor, users: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n] items drawn uniformly, with replacement, from the items each user has not
    trained on (`trained` [n_users, n_items], item 0 being padding), by rejection: a
    few rounds of redrawing the hits, never a [B, n_items] matrix. A user who trained
    on almost every item may keep a training item after the last round."""
    n_items = trained.shape[1]
    items = torch.randint(1, n_items, (len(users), n), device=users.device)
    for _ in range(10):
        hit = trained[users[:, None], items]
        if not bool(hit.any()):
            break
        items = torch.where(hit, torch.randint_like(items, 1, n_items), items)
    return items
