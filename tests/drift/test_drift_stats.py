"""Drift statistics equal scipy's on raw samples, and stay within their stated bounds from a profile."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial import distance

from appliance.datasets.profile import categorical_profile, numeric_profile
from appliance.drift import numeric as num
from appliance.drift import stats
from appliance.drift.categorical import CategoricalReference, cells

CASES = [
    ("continuous small", 300, 450, False),
    ("continuous exact-p boundary", 9000, 10_000, False),
    ("continuous asymptotic", 20_000, 15_000, False),
    ("ties", 2000, 1500, True),
]


@pytest.mark.parametrize(("label", "n", "m", "ties"), CASES)
def test_raw_reference_equals_scipy(label: str, n: int, m: int, ties: bool) -> None:
    rng = np.random.default_rng(len(label))
    a = rng.normal(size=n)
    b = rng.normal(0.07, 1.2, size=m)
    if ties:
        a, b = np.round(a * 3), np.round(b * 3)
    b[::97] = np.nan  # missing values are left out, as scipy needs
    ref = num.NumericReference.from_values(a)
    counts = num.accumulate(ref, b, chunk=777)  # many chunks
    present = b[~np.isnan(b)]
    d, bound = num.ks_statistic(ref, counts)
    expect = sps.ks_2samp(a, present)
    assert bound == 0.0
    assert abs(d - expect.statistic) <= 1e-9
    assert abs(stats.ks_pvalue(d, n, len(present)) - expect.pvalue) <= 1e-9
    w, _ = num.wasserstein(ref, counts, b, chunk=777)
    assert abs(w - sps.wasserstein_distance(a, present)) <= 1e-9
    assert counts.missing == int(np.isnan(b).sum())


def test_current_outside_reference_range_and_constant_reference() -> None:
    a = np.array([1.0, 1.0, 1.0])
    b = np.array([-3.0, 1.0, 2.5, 7.0])
    ref = num.NumericReference.from_values(a)
    c = num.accumulate(ref, b)
    assert abs(num.ks_statistic(ref, c)[0] - sps.ks_2samp(a, b).statistic) <= 1e-12
    assert abs(num.wasserstein(ref, c, b)[0] - sps.wasserstein_distance(a, b)) <= 1e-12


def test_chi_square_and_js_equal_scipy() -> None:
    r = np.array([50.0, 30, 20, 0])
    c = np.array([40.0, 35, 15, 10])
    stat, p, dof = stats.chi2_homogeneity(r, c)
    expect = sps.chi2_contingency(np.vstack([r, c]), correction=False)
    assert abs(stat - expect.statistic) <= 1e-9 and abs(p - expect.pvalue) <= 1e-9
    assert dof == expect.dof
    obs, exp = np.array([12.0, 30, 58]), np.array([20.0, 30, 50])
    assert np.allclose(stats.chi2_goodness_of_fit(obs, exp), sps.chisquare(obs, exp), atol=1e-12)
    assert abs(stats.js_distance(r, c) - distance.jensenshannon(r, c)) <= 1e-12


def test_psi_is_the_textbook_formula_with_half_counts() -> None:
    r = np.array([100.0, 0, 50])
    c = np.array([80.0, 20, 50])
    p = (r + 0.5) / (r.sum() + 1.5)
    q = (c + 0.5) / (c.sum() + 1.5)
    assert stats.psi(r, c) == pytest.approx(float(np.sum((q - p) * np.log(q / p))), abs=1e-12)
    # an empty reference bin gives a finite, moderate term, not a blow-up
    assert 0 < stats.psi(r, c) < 1


def test_holm_matches_definition() -> None:
    ps = [0.01, 0.04, 0.03, 0.005, float("nan")]
    adj = stats.holm(ps)
    # sorted: 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> 0.02, 0.03, 0.06, max(0.06, 0.04)
    assert adj[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adj[4] != adj[4]


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.5])
def test_profile_statistics_within_stated_bounds(shift: float) -> None:
    rng = np.random.default_rng(7)
    a = rng.lognormal(size=50_000)
    b = rng.lognormal(shift, 1.1, size=20_000)
    profile = {"type": "numeric", **numeric_profile(a, 1000)}
    ref = num.NumericReference.from_profile(profile)
    assert not ref.exact
    counts = num.accumulate(ref, b)
    d_hat, d_bound = num.ks_statistic(ref, counts)
    d = sps.ks_2samp(a, b).statistic
    assert d_hat - 1e-12 <= d <= d_hat + d_bound + 1e-12
    assert d_bound <= 0.0011
    w_hat, w_bound = num.wasserstein(ref, counts)
    w = sps.wasserstein_distance(a, b)
    assert abs(w_hat - w) <= w_bound


def test_profile_wasserstein_is_close_on_a_smooth_distribution() -> None:
    rng = np.random.default_rng(8)
    a = rng.normal(size=50_000)
    b = rng.normal(0.2, 1.1, size=20_000)
    ref = num.NumericReference.from_profile({"type": "numeric", **numeric_profile(a, 1000)})
    w_hat, w_bound = num.wasserstein(ref, num.accumulate(ref, b))
    w = sps.wasserstein_distance(a, b)
    assert abs(w_hat - w) <= w_bound
    assert abs(w_hat - w) / a.std() < 0.005


def test_profile_boolean_column_is_exact() -> None:
    a = (np.random.default_rng(3).random(5000) < 0.3).astype(float)
    b = (np.random.default_rng(4).random(4000) < 0.4).astype(float)
    ref = num.NumericReference.from_profile({"type": "boolean", **numeric_profile(a, 1000)})
    assert ref.exact
    c = num.accumulate(ref, b)
    assert abs(num.ks_statistic(ref, c)[0] - sps.ks_2samp(a, b).statistic) <= 1e-12


def test_categorical_profile_top_k_and_other() -> None:
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5
    ref = CategoricalReference.from_profile({"type": "categorical", **categorical_profile(values, 2)})
    laid, _ = cells(ref, ["a"] * 10 + ["z"] * 10 + [None])
    assert laid.labels == ["a", "b", "(other)"]
    assert laid.ref.tolist() == [50, 30, 20] and laid.cur.tolist() == [10, 0, 10]
    assert laid.missing == 1
    full = CategoricalReference.from_values(values)
    laid, _ = cells(full, ["a", "z", "z"])
    assert laid.unseen == {"z": 2}


def test_long_grid_and_short_grid_passes_count_alike() -> None:
    # A grid much longer than the chunk is counted group by group, a short one by bincount.
    rng = np.random.default_rng(7)
    a = rng.normal(size=5000)
    b = np.r_[rng.normal(0.1, 1.1, size=4000), a[:300], np.nan]  # values on grid points too
    ref = num.NumericReference.from_values(a)
    grouped = num.accumulate(ref, b, chunk=97)
    whole = num.accumulate(ref, b, chunk=len(b))
    assert np.array_equal(grouped.counts, whole.counts)
    assert np.allclose(grouped.sums, whole.sums, rtol=0, atol=1e-9)
    assert (grouped.n, grouped.missing) == (whole.n, whole.missing) == (len(b) - 1, 1)
    r, c = num.psi_counts(ref, grouped, 10)
    assert r.sum() == len(a) and c.sum() == len(b) - 1
    # Deciles of the reference: each group holds a tenth of it.
    assert np.array_equal(r, np.full(10, len(a) / 10))
