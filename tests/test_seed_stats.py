"""jaxghpo.seed_stats against hand-worked numbers: closed forms of the t distribution, enumerated
permutation tests, the issue's per-seed GHPO - GRPO differences, Holm, correlation, and the textbook
sample sizes of the t-test (scipy, where installed, as a second check)."""
import math

import numpy as np
import pytest

from jaxghpo import seed_stats as S

# Per-seed GHPO minus GRPO, unhinted valid pass@1 on levels 5-6 after training (issue 23, the 5-seed study).
ISSUE_DIFFS = [-0.245, -0.176, -0.026, -0.045, -0.239]


def test_incomplete_beta_and_t_closed_forms():
  assert S.betainc(2.5, 1.0, 0.3) == pytest.approx(0.3 ** 2.5, rel=1e-12)  # I_x(a, 1) = x^a
  assert S.betainc(1.0, 3.0, 0.2) == pytest.approx(1 - 0.8 ** 3, rel=1e-12)  # I_x(1, b) = 1 - (1-x)^b
  assert S.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-13)  # Cauchy: 1/2 + atan(t)/pi
  for t in (-3.0, -0.4, 0.0, 1.7, 25.0):
    assert S.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)  # df = 2
  assert S.t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-11)  # 12.7062
  assert S.t_quantile(0.975, 2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-11)  # 4.3027
  assert S.t_quantile(0.975, 4) == pytest.approx(2.776445105, rel=1e-9)
  assert S.t_quantile(0.025, 4) == pytest.approx(-2.776445105, rel=1e-9)
  assert S.t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)  # the normal limit
  with pytest.raises(ValueError, match="p must be in"):
    S.t_quantile(1.0, 3)


def test_paired_t_and_sign_flip_on_the_issues_numbers():
  r = S.paired_t([0.0] * 5, ISSUE_DIFFS)
  assert r["diff"] == pytest.approx(-0.1462, abs=1e-12)
  assert (round(r["low"], 3), round(r["high"], 3)) == (-0.276, -0.016)
  assert r["p"] == pytest.approx(0.0356, abs=5e-4)  # |t| = 3.119 on 4 df
  # Every sign negative: only the observed pattern and its mirror reach |sum|: 2 / 32, the floor for 5 seeds.
  assert S.sign_flip_p(ISSUE_DIFFS) == 0.0625 == S.sign_flip_floor(5)
  assert S.sign_flip_p(ISSUE_DIFFS) >= S.p_floor(5) == 1 / 32


def test_sign_flip_enumerated_by_hand():
  # Signed sums of (1, 2, 3) over the 8 patterns: +-6, +-4, +-2, 0, 0.
  assert S.sign_flip_p([1, 2, 3]) == 2 / 8
  assert S.sign_flip_p([1, -2, 3]) == 6 / 8  # |sum| >= 2
  assert S.sign_flip_p([1, 2, -3]) == 1.0  # sum 0
  assert S.sign_flip_p([0, 0, 0]) == 1.0


def test_label_permutation_and_welch_by_hand():
  # a = (0, 1), b = (2, 3): mean differences over the 6 splits are 2, -2, -1, 0, 0, 1: two reach |2|.
  assert S.label_permutation_p([0, 1], [2, 3]) == pytest.approx(1 / 3) == S.label_permutation_floor(2, 2)
  assert S.label_permutation_floor(2, 3) == pytest.approx(1 / 10)
  r = S.welch_t([1, 2, 3], [2, 4, 6])  # variances 1 and 4: se^2 = 1/3 + 4/3, df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2)
  assert r["diff"] == 2.0 and r["se"] == pytest.approx(math.sqrt(5 / 3)) and r["df"] == pytest.approx(50 / 17)
  assert r["high"] - r["diff"] == pytest.approx(S.t_quantile(0.975, 50 / 17) * math.sqrt(5 / 3))
  assert r["p"] == pytest.approx(2 * S.t_cdf(-2 / math.sqrt(5 / 3), 50 / 17))


def test_holm_and_correlation_by_hand():
  # Sorted 0.01, 0.03, 0.04: x3, x2, x1, each at least the one before.
  assert S.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
  assert S.holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}
  assert S.seed_correlation([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # products 2.25-.25-.25+2.25 over 5
  assert S.seed_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert S.seed_correlation([1, 2], [2, 1]) is None and S.seed_correlation([1, 1, 1], [1, 2, 3]) is None


def test_power_matches_textbook_sample_sizes():
  # One-sample / paired t, effect 1 SD, two-sided 0.05, 80% power: n = 9.94 -> 10 seeds (power 0.803 at 10).
  assert S.seeds_needed(1.0, 1.0) == 10
  assert S.power(math.sqrt(10), 9) == pytest.approx(0.80310, abs=2e-5)
  # Two-sample t, 1 SD per arm: n = 16.71 -> 17 per arm (the SD of a difference is sqrt(2) SD).
  assert S.seeds_needed(1.0, math.sqrt(2), paired=False) == 17
  # Many seeds: the normal-theory (z_0.975 + z_0.8) x SD / sqrt(n).
  assert S.detectable_difference(1.0, 10_000) == pytest.approx((1.959964 + 0.841621) / 100, rel=2e-4)
  assert S.power(0.0, 4) == pytest.approx(0.05, abs=1e-9)  # under the null it rejects alpha of the time
  d80 = S.detectable_difference(np.std(ISSUE_DIFFS, ddof=1), 5)
  assert S.power(d80 / (np.std(ISSUE_DIFFS, ddof=1) / math.sqrt(5)), 4) == pytest.approx(0.8, abs=1e-6)


def test_against_scipy_where_installed():
  stats = pytest.importorskip("scipy.stats")
  for df in (1, 3, 7.5, 40):
    for t in (-4.0, -1.0, 0.3, 2.2):
      assert S.t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-12)
    assert S.t_quantile(0.9, df) == pytest.approx(stats.t.ppf(0.9, df), rel=1e-9)
    c = stats.t.ppf(0.975, df)
    for nc in (0.5, 2.0, 3.5):
      assert S.power(nc, df) == pytest.approx(stats.nct.sf(c, df, nc) + stats.nct.cdf(-c, df, nc), abs=1e-8)
  a, b = [0.3, 0.5, 0.4, 0.9], [0.1, 0.2, 0.8]
  assert S.welch_t(a, b)["p"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue, rel=1e-9)


def test_format_p_never_below_the_seed_floor():
  assert S.format_p(0.0, S.p_floor(5)) == S.format_p(0.001, S.p_floor(5)) == "< 0.0313"  # 1/32 rounded up
  assert S.format_p(0.0625, S.p_floor(5)) == "0.0625" and S.format_p(0.035569, S.p_floor(5)) == "0.0356" and S.format_p(1.0, S.p_floor(5)) == "1"
  assert S.format_p(0.0312, S.p_floor(5)) == "< 0.0313" and S.format_p(0.03125, S.p_floor(5)) == "0.0313"
  assert S.format_p(None, S.p_floor(5)) == "-"
  assert S.unpaired_p_floor(5, 5) == 1 / 252 and S.format_p(0.001, S.unpaired_p_floor(5, 5)) == "< 0.00397"


def test_compare_seeds_paired_and_unpaired():
  grpo = {s: 0.8 for s in range(5)}
  r = S.compare_seeds(grpo, {s: 0.8 + d for s, d in enumerate(ISSUE_DIFFS)})
  assert r["paired"] and r["exact"] == "sign flip" and r["p_exact"] == 0.0625 and r["correlation"] is None
  assert r["per_seed"] == pytest.approx(ISSUE_DIFFS)
  assert r["detectable_80"] == pytest.approx(S.detectable_difference(np.std(ISSUE_DIFFS, ddof=1), 5))
  assert r["seeds_for_difference"] == S.seeds_needed(0.10, np.std(ISSUE_DIFFS, ddof=1))
  u = S.compare_seeds({0: 0.0, 1: 1.0}, {2: 2.0, 3: 3.0})  # different seeds: unpaired
  assert not u["paired"] and u["exact"] == "label permutation" and u["p_exact"] == pytest.approx(1 / 3)
  assert u["diff"] == 2.0 and u["p"] == pytest.approx(S.welch_t([0, 1], [2, 3])["p"])
