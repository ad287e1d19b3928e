"""Inference over training seeds: the seed (one training run) is the unit of replication.

Two arms, one number per seed each (e.g. unhinted valid pass@1 on the hard levels after training):
- `paired_t` (seeds paired: the same seed in both arms) / `welch_t` (unpaired): the 95% t-interval of
  the difference and its two-sided t p-value;
- `sign_flip_p` / `label_permutation_p`: exact permutation tests (every one of the 2^n sign patterns of
  the per-seed differences; every split of the pooled seeds), two-sided, with their smallest possible p;
- `holm`: family-wise correction across secondary comparisons;
- `power` / `detectable_difference` / `seeds_needed`: exact power of the two-sided t-test (noncentral t,
  by quadrature over the chi distribution), the difference detectable at 80% power, the seeds needed;
- `seed_correlation`: Pearson correlation of two arms' per-seed values (what pairing can buy);
- `p_floor` and `format_p`: no p-value is printed below 1/2^n for n paired seeds (1 / the number of label
  splits unpaired), below what any exact test over those seeds could give (a t p below it rests on the
  normal model alone and is shown as "< floor").

Pure Python + numpy (no scipy): the Student t CDF is the regularized incomplete beta function
(continued fraction), its quantile found by bisection.
"""
from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import numpy as np

ALPHA = 0.05  # two-sided
POWER = 0.8
MAX_EXACT_PATTERNS = 1 << 22  # exact tests enumerate at most this many sign patterns / splits


# ------------------------------------------------------------------------------------ distributions
def _betacf(a: float, b: float, x: float) -> float:
  """Continued fraction of the incomplete beta function (modified Lentz)."""
  tiny, eps = 1e-300, 1e-15
  qab, qap, qam = a + b, a + 1.0, a - 1.0
  c, d = 1.0, 1.0 - qab * x / qap
  d = 1.0 / (d if abs(d) > tiny else tiny)
  h = d
  for m in range(1, 10_000):
    m2 = 2 * m
    aa = m * (b - m) * x / ((qam + m2) * (a + m2))
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > tiny else tiny)
    c = 1.0 + aa / c
    c = c if abs(c) > tiny else tiny
    h *= d * c
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
    d = 1.0 + aa * d
    d = 1.0 / (d if abs(d) > tiny else tiny)
    c = 1.0 + aa / c
    c = c if abs(c) > tiny else tiny
    delta = d * c
    h *= delta
    if abs(delta - 1.0) < eps:
      return h
  raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
  """Regularized incomplete beta I_x(a, b), a, b > 0, 0 <= x <= 1."""
  if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
    raise ValueError(f"betainc needs a, b > 0 and 0 <= x <= 1; got a={a}, b={b}, x={x}")
  if x in (0.0, 1.0):
    return x
  log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _betacf(a, b, x) / a
  return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
  """P(T <= t) for Student's t with df > 0 degrees of freedom."""
  if df <= 0:
    raise ValueError(f"t_cdf: degrees of freedom must be > 0, got {df}")
  if math.isinf(t):
    return 1.0 if t > 0 else 0.0
  tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
  return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
  """The t with P(T <= t) = p (bisection on t_cdf to 1e-13 relative)."""
  if not 0.0 < p < 1.0:
    raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
  if p == 0.5:
    return 0.0
  if p < 0.5:
    return -t_quantile(1.0 - p, df)
  lo, hi = 0.0, 1.0
  while t_cdf(hi, df) < p:
    lo, hi = hi, hi * 2.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if t_cdf(mid, df) < p:
      lo = mid
    else:
      hi = mid
    if hi - lo <= 1e-13 * hi:
      break
  return 0.5 * (lo + hi)


def t_two_sided_p(t: float, df: float) -> float:
  return float(min(1.0, 2.0 * t_cdf(-abs(t), float(df))))


def _normal_cdf(x: np.ndarray) -> np.ndarray:
  return 0.5 * np.asarray(np.frompyfunc(math.erfc, 1, 1)(-np.asarray(x, np.float64) / math.sqrt(2.0)), np.float64)


# ------------------------------------------------------------------------------------ power
def power(noncentrality: float, df: float, alpha: float = ALPHA, points: int = 4001) -> float:
  """Power of the two-sided level-alpha t-test with df degrees of freedom when the true difference is
  `noncentrality` standard errors: P(|Z + nc| > c S), S = chi_df / sqrt(df), c the t critical value.
  Simpson quadrature over the chi distribution (exact to ~1e-9 for df >= 1)."""
  c = t_quantile(1.0 - alpha / 2.0, df)
  centre = math.sqrt(df)
  u = np.linspace(max(0.0, centre - 12.0), centre + 12.0, points)
  with np.errstate(divide="ignore"):
    log_u = np.where(u > 0, np.log(np.maximum(u, 1e-300)), -np.inf)
  log_density = ((df - 1.0) * log_u if df != 1.0 else 0.0) - u * u / 2.0 - (df / 2.0 - 1.0) * math.log(2.0) \
      - math.lgamma(df / 2.0)
  density = np.exp(log_density)
  s = u / centre
  reject = _normal_cdf(noncentrality - c * s) + _normal_cdf(-c * s - noncentrality)
  h = u[1] - u[0]
  weights = np.ones(points)
  weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
  return float(min(1.0, h / 3.0 * np.sum(weights * density * reject)))


def detectable_noncentrality(df: float, alpha: float = ALPHA, target: float = POWER) -> float:
  """The true difference, in standard errors, that the two-sided t-test detects with probability `target`."""
  lo, hi = 0.0, 1.0
  while power(hi, df, alpha) < target:
    lo, hi = hi, hi * 2.0
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    if power(mid, df, alpha) < target:
      lo = mid
    else:
      hi = mid
  return 0.5 * (lo + hi)


def _df(n: int, paired: bool) -> int:
  return n - 1 if paired else 2 * n - 2


def detectable_difference(sd: float, n: int, alpha: float = ALPHA, target: float = POWER,
                          paired: bool = True) -> float:
  """The true difference detected with probability `target` by the two-sided t-test over n seeds per arm,
  sd the standard deviation of one seed's difference (paired: of the per-seed differences, t with n - 1 df;
  unpaired: sqrt(2) x the per-arm SD, two-sample t with 2n - 2 df)."""
  if n < 2:
    raise ValueError(f"detectable_difference needs at least 2 seeds, got n={n}")
  return detectable_noncentrality(_df(n, paired), alpha, target) * sd / math.sqrt(n)


def seeds_needed(difference: float, sd: float, alpha: float = ALPHA, target: float = POWER,
                 paired: bool = True, most: int = 10_000) -> int | None:
  """The fewest seeds per arm whose two-sided t-test detects `difference` with probability `target`
  (sd as in detectable_difference; None if more than `most`)."""
  if difference <= 0:
    raise ValueError(f"seeds_needed: difference must be > 0, got {difference}")
  if sd == 0:
    return 2
  n = 2
  while n <= most:
    if power(difference * math.sqrt(n) / sd, _df(n, paired), alpha) >= target:
      return n
    n = n + 1 if n < 200 else int(n * 1.05)
  return None


# ------------------------------------------------------------------------------------ t intervals
def _finite(values: Sequence[float | None]) -> np.ndarray:
  return np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))], np.float64)


def paired_t(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
  """Mean of b - a over paired seeds (a[i], b[i] from the same seed), its two-sided t-interval and p."""
  a_, b_ = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a_.shape != b_.shape or a_.ndim != 1:
    raise ValueError(f"paired_t needs two equal-length per-seed lists; got {a_.shape} and {b_.shape}")
  d = b_ - a_
  n = int(d.size)
  if n < 2:
    raise ValueError(f"paired_t needs at least 2 paired seeds, got {n}")
  mean, sd = float(d.mean()), float(d.std(ddof=1))
  se = sd / math.sqrt(n)
  half = t_quantile(0.5 + confidence / 2.0, n - 1) * se
  t = mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
  return {"test": "paired t", "n": n, "diff": mean, "sd": sd, "se": se, "df": n - 1, "t": t,
          "low": mean - half, "high": mean + half, "p": t_two_sided_p(t, n - 1)}


def welch_t(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
  """Mean of b minus mean of a over unpaired seeds: Welch's t-interval (Satterthwaite df) and p."""
  a_, b_ = _finite(a), _finite(b)
  if a_.size < 2 or b_.size < 2:
    raise ValueError(f"welch_t needs at least 2 seeds per arm; got {a_.size} and {b_.size}")
  va, vb = a_.var(ddof=1) / a_.size, b_.var(ddof=1) / b_.size
  se = math.sqrt(va + vb)
  mean = float(b_.mean() - a_.mean())
  if se > 0:
    df = (va + vb) ** 2 / (va ** 2 / (a_.size - 1) + vb ** 2 / (b_.size - 1))
    t = mean / se
  else:
    df, t = float(a_.size + b_.size - 2), (0.0 if mean == 0 else math.copysign(math.inf, mean))
  half = t_quantile(0.5 + confidence / 2.0, df) * se
  return {"test": "Welch t", "n": int(min(a_.size, b_.size)), "n_a": int(a_.size), "n_b": int(b_.size),
          "diff": mean, "se": se, "df": float(df), "t": t, "low": mean - half, "high": mean + half,
          "p": t_two_sided_p(t, df)}


# ------------------------------------------------------------------------------------ exact permutation tests
def sign_flip_p(d: Sequence[float]) -> float:
  """Exact two-sided sign-flip test of mean(d) = 0 over all 2^n sign patterns of the per-seed differences:
  the fraction of patterns whose |sum| is at least the observed one. Never below 2 / 2^n (the observed
  pattern and its mirror) unless every d is 0 (then 1)."""
  d_ = np.asarray(d, np.float64)
  n = int(d_.size)
  if n < 1 or (1 << n) > MAX_EXACT_PATTERNS:
    raise ValueError(f"sign_flip_p: {n} seeds give 2^{n} sign patterns; at most {MAX_EXACT_PATTERNS} are enumerated")
  observed = abs(float(d_.sum()))
  tol = 1e-12 * max(1.0, float(np.abs(d_).sum()))
  bits = np.arange(n)
  hits, chunk = 0, 1 << 16
  for start in range(0, 1 << n, chunk):
    codes = np.arange(start, min(start + chunk, 1 << n))
    signs_PxN = 1.0 - 2.0 * ((codes[:, None] >> bits) & 1)
    hits += int(np.sum(np.abs(signs_PxN @ d_) >= observed - tol))
  return hits / float(1 << n)


def label_permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
  """Exact two-sided permutation test of equal means for unpaired seeds: over every way to pick len(b) of
  the pooled values as "b", the fraction with |mean(b) - mean(a)| at least the observed one."""
  a_, b_ = _finite(a), _finite(b)
  pooled = np.concatenate([a_, b_])
  total, nb = int(pooled.size), int(b_.size)
  if a_.size < 1 or nb < 1 or math.comb(total, nb) > MAX_EXACT_PATTERNS:
    raise ValueError(f"label_permutation_p: {a_.size} + {nb} seeds give C({total}, {nb}) splits; "
                     f"need 1..{MAX_EXACT_PATTERNS}")
  observed = abs(float(b_.mean() - a_.mean()))
  tol = 1e-12 * max(1.0, float(np.abs(pooled).max()))
  sum_all, hits, count = float(pooled.sum()), 0, 0
  for idx in itertools.combinations(range(total), nb):
    sb = float(pooled[list(idx)].sum())
    hits += abs(sb / nb - (sum_all - sb) / (total - nb)) >= observed - tol
    count += 1
  return hits / count


def sign_flip_floor(n: int) -> float:
  """The smallest p the exact two-sided sign-flip test over n seeds can give."""
  return min(1.0, 2.0 / (1 << n))


def label_permutation_floor(n_a: int, n_b: int) -> float:
  """The smallest p the exact two-sided label-permutation test can give (equal arms: a split and its swap tie)."""
  return min(1.0, (2.0 if n_a == n_b else 1.0) / math.comb(n_a + n_b, n_b))


def p_floor(n: int) -> float:
  """The smallest p-value printed for a comparison over n paired seeds: 1/2^n."""
  return 1.0 / (1 << n)


def unpaired_p_floor(n_a: int, n_b: int) -> float:
  """The smallest p-value printed for an unpaired comparison: 1 over the number of label splits."""
  return 1.0 / math.comb(n_a + n_b, n_b)


def _ceil_sig(x: float, digits: int = 3) -> float:
  if x <= 0:
    return 0.0
  scale = 10.0 ** (digits - 1 - math.floor(math.log10(x)))
  return math.ceil(x * scale - 1e-9) / scale


def format_p(p: float | None, floor: float) -> str:
  """p to 3 significant digits, rounded up (never reads smaller than it is); below `floor` (p_floor or
  unpaired_p_floor: what the seed count allows), "< floor" (rounded up) instead of the number."""
  if p is None or not math.isfinite(p):
    return "-"
  if p < floor:
    return f"< {_ceil_sig(floor):.3g}"
  return f"{_ceil_sig(p):.3g}"


# ------------------------------------------------------------------------------------ families, correlation
def holm(p_values: Mapping[str, float]) -> dict[str, float]:
  """Holm-adjusted p-values (family-wise error control over the comparisons given)."""
  order = sorted(p_values, key=lambda k: p_values[k])
  out, running = {}, 0.0
  for i, key in enumerate(order):
    running = max(running, min(1.0, (len(order) - i) * p_values[key]))
    out[key] = running
  return out


def seed_correlation(a: Sequence[float], b: Sequence[float]) -> float | None:
  """Pearson correlation of two arms' per-seed values (paired by seed); None below 3 seeds or for a constant arm."""
  a_, b_ = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a_.shape != b_.shape or a_.size < 3 or a_.std() == 0 or b_.std() == 0:
    return None
  return float(np.corrcoef(a_, b_)[0, 1])


def compare_seeds(a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float],
                  power_difference: float = 0.10) -> dict:
  """Arm b minus arm a over seeds. Paired (paired t + exact sign flip) when both arms have the same seeds,
  else Welch t + exact label permutation. Adds the exact test's p and floor, the seed-level correlation
  (paired), the difference detectable at 80% power and the seeds needed for `power_difference`."""
  a_by_seed = {s: float(v) for s, v in a_by_seed.items() if v is not None and math.isfinite(float(v))}
  b_by_seed = {s: float(v) for s, v in b_by_seed.items() if v is not None and math.isfinite(float(v))}
  if set(a_by_seed) == set(b_by_seed):
    seeds = sorted(a_by_seed)
    a, b = [a_by_seed[s] for s in seeds], [b_by_seed[s] for s in seeds]
    out = paired_t(a, b)
    d = np.asarray(b) - np.asarray(a)
    out.update(paired=True, seeds=seeds, per_seed=[float(x) for x in d], exact="sign flip",
               p_exact=sign_flip_p(d), p_exact_floor=sign_flip_floor(len(seeds)),
               correlation=seed_correlation(a, b), sd_basis="per-seed differences")
    sd, n = out["sd"], len(seeds)
  else:
    a, b = list(a_by_seed.values()), list(b_by_seed.values())
    out = welch_t(a, b)
    out.update(paired=False, seeds_a=sorted(a_by_seed), seeds_b=sorted(b_by_seed), exact="label permutation",
               p_exact=label_permutation_p(a, b), p_exact_floor=label_permutation_floor(len(a), len(b)),
               correlation=None, sd_basis="pooled per-arm SD x sqrt(2)")
    # An unpaired difference of two seeds has variance 2 x the per-arm variance (equal arms assumed).
    sd = math.sqrt(2.0 * (np.var(a, ddof=1) + np.var(b, ddof=1)) / 2.0)
    n = min(len(a), len(b))
  out["p_print_floor"] = p_floor(out["n"]) if out["paired"] else unpaired_p_floor(out["n_a"], out["n_b"])
  out["sd_difference"] = float(sd)
  out["detectable_80"] = detectable_difference(sd, n, paired=out["paired"])
  out["power_difference"] = power_difference
  out["seeds_for_difference"] = seeds_needed(power_difference, sd, paired=out["paired"])
  return out
