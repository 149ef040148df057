"""Significance of a row against another from per-test-example outcomes.

Two rows of a leaderboard (e.g. KD and the plain student) are compared on the same test
examples (per image, per rating, per user). Per example the outcome is averaged over
the seeds both rows have (`seed_mean`), then:

- `wilcoxon` (rating, ranking): Wilcoxon signed-rank test of the paired per-example
  differences (scipy.stats.wilcoxon, zero differences dropped), with the paired t-test
  (scipy.stats.ttest_rel) beside it;
- `mcnemar` (classification): McNemar's exact test, a two-sided binomial test
  (scipy.stats.binomtest) of the examples where one row is right and the other wrong;
  with several seeds, of the sign of each example's seed-averaged difference (with one
  seed this is exactly McNemar's test on the discordant pairs);
- a 95% confidence interval of the mean difference: paired bootstrap over examples
  (scipy.stats.bootstrap, percentile, 2,000 resamples, numpy default_rng seeded), so a
  table is the same every time it is rebuilt;
- win/tie/loss: the examples where the row is better, equal, worse;
- `holm`: Holm's step-down correction across the rows of one table.

Averaging over seeds treats each test example as the unit and the seeds as repeated
measurements of it: it tests whether the row is better on these test examples on
average over training runs, not whether it would be on a new training run.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: the tests `compare` runs, by the task's `paired_test`
TESTS = {
    "wilcoxon": "Wilcoxon signed-rank (scipy.stats.wilcoxon)",
    "mcnemar": "McNemar exact (scipy.stats.binomtest on the discordant examples)",
}

BOOTSTRAP_RESAMPLES = 2000
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """Row a against row b over `n` test examples and `seeds` (common to both).

    delta and ci are in the metric's units (scale × mean(a - b)); p is the task's paired
    test, p_t the paired t-test (None for McNemar); wins/ties/losses count the examples
    where a is better/equal/worse than b by the metric's direction."""

    test: str
    n: int
    seeds: tuple[int, ...]
    delta: float
    ci: tuple[float, float]
    p: float
    p_t: float | None
    wins: int
    ties: int
    losses: int

    @property
    def half_width(self) -> float:
        return (self.ci[1] - self.ci[0]) / 2


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None entries are left out and kept None).

    p_(i) sorted ascending among m tests: adjusted p_(i) = max_{j<=i} min(1, (m-j+1) p_(j)).
    Written here (a few lines) because scipy has only Benjamini-Hochberg
    (scipy.stats.false_discovery_control) and statsmodels is not a dependency."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """McNemar's exact test of two paired binary outcome vectors (True = correct)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    return sign_test(a.astype(np.int8) - b.astype(np.int8))


def sign_test(diff: np.ndarray) -> float:
    """Two-sided exact binomial test of positive against negative differences (zeros
    dropped); on 0/1 outcomes this is McNemar's exact test."""
    pos, neg = int((diff > 0).sum()), int((diff < 0).sum())
    if pos + neg == 0:
        return 1.0
    return float(stats.binomtest(pos, pos + neg, 0.5).pvalue)


def wilcoxon_p(diff: np.ndarray) -> float:
    if not np.any(diff != 0):
        return 1.0
    return float(stats.wilcoxon(diff).pvalue)


def ttest_p(a: np.ndarray, b: np.ndarray) -> float | None:
    """Paired t-test; None where it is undefined (every difference the same, non-zero)."""
    diff = a - b
    if not np.any(diff != 0):
        return 1.0
    if np.ptp(diff) == 0:  # a constant non-zero difference: t is infinite
        return None
    p = float(stats.ttest_rel(a, b).pvalue)
    return p if np.isfinite(p) else None


def bootstrap_ci(
    diff: np.ndarray, seed: int = 0, level: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(diff), resampling examples (the pairs stay
    together: a paired bootstrap), with numpy's default_rng(seed)."""
    diff = np.asarray(diff, dtype=np.float64)
    if len(diff) < 2 or np.all(diff == diff[0]):
        m = float(diff.mean()) if len(diff) else 0.0
        return (m, m)
    res = stats.bootstrap(
        (diff,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        batch=max(1, 2_000_000 // len(diff)),  # bounds memory on large test splits
        random_state=np.random.default_rng(seed),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def seed_mean(by_seed: Mapping[int, np.ndarray], seeds: Sequence[int]) -> np.ndarray:
    return np.mean([np.asarray(by_seed[s], dtype=np.float64) for s in seeds], axis=0)


def compare(
    a: Mapping[int, np.ndarray],
    b: Mapping[int, np.ndarray],
    test: str,
    scale: float = 1.0,
    lower_is_better: bool = True,
    seed: int = 0,
) -> Comparison | None:
    """Row a against row b: {seed: per-example outcome} each; None when they share no
    seed or their vectors differ in length (not the same split)."""
    if test not in TESTS:
        raise ValueError(f"unknown paired test {test!r} (known: {', '.join(TESTS)})")
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        return None
    lengths = {len(a[s]) for s in seeds} | {len(b[s]) for s in seeds}
    if len(lengths) != 1 or 0 in lengths:
        return None
    x, y = seed_mean(a, seeds), seed_mean(b, seeds)
    diff = x - y
    if test == "mcnemar":
        p, p_t = sign_test(diff), None
    else:
        p, p_t = wilcoxon_p(diff), ttest_p(x, y)
    lo, hi = sorted(scale * v for v in bootstrap_ci(diff, seed))
    gain = scale * diff * (-1.0 if lower_is_better else 1.0)
    wins, losses = int((gain > 0).sum()), int((gain < 0).sum())
    return Comparison(
        test=test,
        n=len(diff),
        seeds=seeds,
        delta=float(scale * diff.mean()),
        ci=(lo, hi),
        p=p,
        p_t=p_t,
        wins=wins,
        ties=len(diff) - wins - losses,
        losses=losses,
    )


def significant(c: Comparison, p_adjusted: float | None, lower_is_better: bool) -> str:
    """'win', 'loss' or '' (not significant after correction) for a comparison."""
    if p_adjusted is None or p_adjusted >= ALPHA or c.delta == 0:
        return ""
    better = c.delta < 0 if lower_is_better else c.delta > 0
    return "win" if better else "loss"


@dataclass(frozen=True)
class NoiseFloor:
    """The plain student against itself, seed against seed: what training noise alone
    moves the metric by, and the CI half-width of one such comparison."""

    pairs: int
    half_width: float
    abs_delta: float


def noise_floor(by_seed: Mapping[int, np.ndarray], scale: float = 1.0, seed: int = 0) -> NoiseFloor | None:
    """Median 95% CI half-width (paired bootstrap) and median |Δ| over every pair of
    the row's seeds; None with fewer than two seeds."""
    seeds = sorted(by_seed)
    if len(seeds) < 2 or len({len(by_seed[s]) for s in seeds}) != 1:
        return None
    widths, deltas = [], []
    for s, t in itertools.combinations(seeds, 2):
        diff = np.asarray(by_seed[s], dtype=np.float64) - np.asarray(by_seed[t], dtype=np.float64)
        lo, hi = bootstrap_ci(diff, seed)
        widths.append(abs(scale) * (hi - lo) / 2)
        deltas.append(abs(scale * float(diff.mean())))
    return NoiseFloor(
        pairs=len(widths), half_width=statistics.median(widths), abs_delta=statistics.median(deltas)
    )
