"""harness/stats.py: the per-example paired tests, Holm, McNemar, bootstrap CI, noise floor."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from harness import stats


def test_holm_against_a_hand_worked_case():
    # m = 4, sorted p: 0.01, 0.02, 0.03, 0.5
    #   0.01 × 4 = 0.04; 0.02 × 3 = 0.06; 0.03 × 2 = 0.06 (max with 0.06); 0.5 × 1 = 0.5
    adjusted = stats.holm([0.03, 0.5, 0.01, None, 0.02])
    assert adjusted[3] is None
    assert adjusted[:3] + adjusted[4:] == pytest.approx([0.06, 0.5, 0.04, 0.06])
    # monotone step-down: a later p never gets a smaller adjustment; capped at 1
    assert stats.holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])
    assert stats.holm([0.9, 0.8, 0.7]) == pytest.approx([1.0, 1.0, 1.0])
    assert stats.holm([]) == []


def test_mcnemar_exact_on_a_hand_worked_table():
    # 2×2 table of paired outcomes: both right 5, a right only 8, b right only 2, both wrong 3.
    a = np.array([1] * 5 + [1] * 8 + [0] * 2 + [0] * 3, dtype=bool)
    b = np.array([1] * 5 + [0] * 8 + [1] * 2 + [0] * 3, dtype=bool)
    # exact McNemar: two-sided binomial on the 10 discordant pairs, 8 vs 2:
    # P(X <= 2) + P(X >= 8), X ~ Bin(10, 1/2) = 2 × (1 + 10 + 45) / 1024 = 112 / 1024
    assert stats.mcnemar_exact(a, b) == pytest.approx(112 / 1024)
    assert stats.mcnemar_exact(a, a) == 1.0  # no discordant pair
    c = stats.compare({0: a}, {0: b}, "mcnemar", scale=-100.0, lower_is_better=True)
    assert c.p == pytest.approx(112 / 1024)
    assert c.delta == pytest.approx(-100 * 6 / 18)  # error % drops by 6 of 18 examples
    assert (c.wins, c.ties, c.losses) == (8, 8, 2)
    assert c.p_t is None


def _draws(rng: np.random.Generator, n: int, shift: float) -> tuple[dict, dict]:
    """Per-example absolute errors of a baseline and a row, paired (shared difficulty),
    over two seeds; the row's errors are `shift` lower on average."""
    difficulty = rng.gamma(2.0, 0.4, n)
    base = {s: np.abs(difficulty + rng.normal(0, 0.3, n)) for s in (0, 1)}
    row = {s: np.abs(difficulty + rng.normal(0, 0.3, n)) - shift for s in (0, 1)}
    return row, base


def test_a_real_shift_is_detected_with_its_sign_and_ci():
    row, base = _draws(np.random.default_rng(1), 500, shift=0.05)
    c = stats.compare(row, base, "wilcoxon", lower_is_better=True)
    assert c.seeds == (0, 1) and c.n == 500
    assert c.p < 1e-3 and c.p_t < 1e-3
    assert c.ci[0] < -0.05 + 0.03 and c.ci[1] < 0  # the CI excludes 0 and covers the shift
    assert c.ci[0] < c.delta < c.ci[1]
    assert stats.significant(c, stats.holm([c.p])[0], lower_is_better=True) == "win"
    assert stats.significant(c, stats.holm([c.p])[0], lower_is_better=False) == "loss"
    assert c.wins > c.losses


def test_a_null_shift_is_not_detected_beyond_the_nominal_rate():
    rng = np.random.default_rng(7)
    draws = 300
    rejected = {"wilcoxon": 0, "t": 0, "ci": 0, "sign": 0}
    for _ in range(draws):
        row, base = _draws(rng, 200, shift=0.0)
        c = stats.compare(row, base, "wilcoxon")
        rejected["wilcoxon"] += c.p < 0.05
        rejected["t"] += c.p_t < 0.05
        rejected["ci"] += not (c.ci[0] <= 0 <= c.ci[1])
        binary_a = {0: rng.random(200) < 0.7}
        binary_b = {0: rng.random(200) < 0.7}
        rejected["sign"] += stats.compare(binary_a, binary_b, "mcnemar").p < 0.05
    # 5% nominal; over 300 draws the binomial 99.9% bound of a 5% rate is about 10%
    for name, count in rejected.items():
        assert count / draws < 0.10, (name, count)
    assert rejected["wilcoxon"] > 0  # the test is not simply never rejecting


def test_compare_averages_outcomes_over_the_common_seeds():
    a = {0: np.array([1.0, 2.0, 3.0]), 1: np.array([3.0, 2.0, 1.0]), 2: np.array([9.0, 9.0, 9.0])}
    b = {0: np.array([1.0, 1.0, 1.0]), 1: np.array([1.0, 1.0, 1.0])}
    c = stats.compare(a, b, "wilcoxon")
    assert c.seeds == (0, 1)  # seed 2 is a's alone
    assert c.delta == pytest.approx(1.0)  # mean of [2, 2, 2] - 1
    assert c.ci == (pytest.approx(1.0), pytest.approx(1.0))  # no spread: the CI is the point
    assert stats.compare(a, {5: b[0]}, "wilcoxon") is None  # no common seed
    assert stats.compare(a, {0: np.ones(4)}, "wilcoxon") is None  # not the same split
    with pytest.raises(ValueError, match="unknown paired test"):
        stats.compare(a, b, "anova")


def test_p_values_are_scipys_and_the_bootstrap_is_seeded():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0, 1, 100), rng.normal(0.2, 1, 100)
    c = stats.compare({0: x}, {0: y}, "wilcoxon", lower_is_better=False)
    assert c.p == pytest.approx(sps.wilcoxon(x - y).pvalue)
    assert c.p_t == pytest.approx(sps.ttest_rel(x, y).pvalue)
    assert stats.bootstrap_ci(x - y, seed=0) == stats.bootstrap_ci(x - y, seed=0)
    assert stats.bootstrap_ci(x - y, seed=0) != stats.bootstrap_ci(x - y, seed=1)
    lo, hi = stats.bootstrap_ci(x - y)
    se = np.std(x - y, ddof=1) / 10
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)  # close to the normal CI


def test_noise_floor_of_a_row_against_itself():
    rng = np.random.default_rng(0)
    truth = rng.gamma(2.0, 0.4, 400)
    runs = {s: truth + rng.normal(0, 0.2, 400) for s in range(4)}
    f = stats.noise_floor(runs)
    assert f.pairs == 6
    # one pair's difference has sd 0.2·√2; the CI half-width of its mean is about 1.96 × that / 20
    assert f.half_width == pytest.approx(1.96 * 0.2 * np.sqrt(2) / 20, rel=0.2)
    assert stats.noise_floor({0: truth}) is None
