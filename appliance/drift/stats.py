"""The textbook statistics drift is built on, each as a small pure function.

They take counts or already-computed distances, never raw columns: the
streaming pass in :mod:`appliance.drift.numeric` and
:mod:`appliance.drift.categorical` reduces a column to counts first. Where a
function mirrors a scipy routine (the KS p-value, chi-square), it uses the
same formula and the same switch points, so a statistic computed here equals
scipy's on the same sample to rounding.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

# scipy is imported inside the functions that use it: it takes about a second to load,
# and every command that merely lists drift settings or alerts would pay for it.

# Pseudo-count added to every bin before PSI's logarithm (Jeffreys' prior, the
# "add one half" rule). An empty bin then contributes a finite, sample-size
# aware term instead of the blow-up that filling it with the smallest float
# causes; the smoothing shrinks as the samples grow.
PSI_PSEUDO_COUNT = 0.5

# ks_2samp's 'auto' mode: exact p-values while both samples have at most this
# many values, Smirnov's asymptotic distribution above.
KS_EXACT_MAX_N = 10_000
KS_TINY_P = 1e-12


def ks_pvalue(d: float, n1: int, n2: int) -> float:
    """Two-sided two-sample KS p-value for statistic ``d``, as ``ks_2samp(method='auto')``."""
    if n1 <= 0 or n2 <= 0:
        return float("nan")
    from scipy import stats as sps
    from scipy.stats import _stats_py  # ks_2samp's exact small-sample p-value

    if max(n1, n2) <= KS_EXACT_MAX_N:
        g = math.gcd(n1, n2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            success, _d, prob = _stats_py._attempt_exact_2kssamp(n1, n2, g, d, "two-sided")
        if success:
            return float(np.clip(prob, 0.0, 1.0))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    # Where the Kolmogorov limit is below 1e-12, so is the finite-n value, and
    # scipy's kstwo.sf takes up to a second there: use the limit (off by < 1e-12).
    limit = float(sps.kstwobign.sf(math.sqrt(np.round(en)) * d))
    if limit < KS_TINY_P:
        return limit
    return float(np.clip(sps.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def chi2_homogeneity(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, int]:
    """Pearson's chi-square test that two samples share one categorical distribution.

    The 2 x K contingency test (``scipy.stats.chi2_contingency`` without Yates'
    correction): unlike a goodness-of-fit test against the reference shares, it
    accounts for the reference being a sample too, and a category seen on one
    side only is an ordinary cell rather than a division by zero. Categories
    absent from both samples are dropped. Returns (statistic, p-value, dof).
    """
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    n1, n2 = ref.sum(), cur.sum()
    dof = int(len(ref) - 1)
    if dof < 1 or n1 == 0 or n2 == 0:
        return 0.0, 1.0, max(dof, 0)
    total = ref + cur
    n = n1 + n2
    e1 = total * (n1 / n)
    e2 = total * (n2 / n)
    stat = float(np.sum((ref - e1) ** 2 / e1) + np.sum((cur - e2) ** 2 / e2))
    from scipy import stats as sps

    return stat, float(sps.chi2.sf(stat, dof)), dof


def chi2_goodness_of_fit(observed: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """Pearson's goodness-of-fit statistic and p-value, as ``scipy.stats.chisquare``.

    An expected count of zero with a non-zero observed count is an infinite
    statistic (p = 0), which is what scipy's formula gives before it refuses
    unequal totals.
    """
    obs = np.asarray(observed, dtype=np.float64)
    exp = np.asarray(expected, dtype=np.float64)
    dof = len(obs) - 1
    if dof < 1:
        return 0.0, 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(exp > 0, (obs - exp) ** 2 / np.where(exp > 0, exp, 1.0),
                         np.where(obs > 0, np.inf, 0.0))
    stat = float(terms.sum())
    from scipy import stats as sps

    return stat, float(sps.chi2.sf(stat, dof))


def two_proportion_z_pvalue(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided pooled two-proportion z-test; NaN when both samples are all one value."""
    if n1 <= 0 or n2 <= 0:
        return float("nan")
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2)
    if var <= 0:
        return float("nan")
    z = (p1 - p2) / math.sqrt(var)
    from scipy import stats as sps

    return float(2 * (1 - sps.norm.cdf(abs(z))))


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Population stability index over the same bins: sum (q - p) ln(q / p).

    Bin shares are smoothed with ``PSI_PSEUDO_COUNT`` per bin on both sides,
    p_i = (r_i + 0.5) / (n + 0.5 k), so an empty bin is finite.
    """
    ref = np.asarray(ref_counts, dtype=np.float64)
    cur = np.asarray(cur_counts, dtype=np.float64)
    k = len(ref)
    if k < 2:
        return 0.0
    p = (ref + PSI_PSEUDO_COUNT) / (ref.sum() + PSI_PSEUDO_COUNT * k)
    q = (cur + PSI_PSEUDO_COUNT) / (cur.sum() + PSI_PSEUDO_COUNT * k)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log, range 0..sqrt(ln 2)), as scipy's ``jensenshannon``.

    No smoothing is needed: the mixture is positive wherever either side is,
    and a zero share contributes 0 log 0 = 0.
    """
    p = np.asarray(ref_counts, dtype=np.float64)
    q = np.asarray(cur_counts, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(math.sqrt(max((kl_p + kl_q) / 2, 0.0)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down; NaN stays NaN and is not counted)."""
    values = np.asarray(pvalues, dtype=np.float64)
    out = np.full(len(values), np.nan)
    idx = np.flatnonzero(~np.isnan(values))
    m = len(idx)
    if not m:
        return out.tolist()
    order = idx[np.argsort(values[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[i]))
        out[i] = running
    return out.tolist()
