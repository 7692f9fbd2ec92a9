"""Weighted current rows: a row of weight k counts as k rows for every distance, and the
tests' p-values use Kish's effective sample size; weights of 1 change nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.datasets.profile import categorical_profile, numeric_profile
from appliance.drift import DriftOptions, Reference, check, stats
from appliance.drift import numeric as num
from appliance.drift.categorical import CategoricalReference
from appliance.errors import BadInput

DISTANCES = ("ks", "wasserstein", "wasserstein_normed", "psi", "current_mean", "jensenshannon")


def _reference(rng: np.random.Generator, binned: bool) -> Reference:
    x = np.round(rng.normal(0.0, 1.0, 3000), 2)  # ties, as real data has
    few = rng.choice([0.0, 1.0, 2.0], 3000, p=[0.5, 0.3, 0.2])
    colour = [str(c) for c in rng.choice(["red", "green", "blue"], 3000, p=[0.6, 0.3, 0.1])]
    if binned:
        return Reference({"x": num.NumericReference.from_profile(
                              {"type": "numeric", **numeric_profile(x, 50)}),
                          "few": num.NumericReference.from_values(few),
                          "colour": CategoricalReference.from_profile(
                              {"type": "categorical", **categorical_profile(colour, 10)})},
                         3000, "profile")
    return Reference({"x": num.NumericReference.from_values(x),
                      "few": num.NumericReference.from_values(few),
                      "colour": CategoricalReference.from_values(colour)}, 3000, "raw")


def _current(rng: np.random.Generator, n: int) -> dict[str, object]:
    x = np.round(rng.normal(0.3, 1.2, n), 2)
    x[::17] = np.nan
    colour: list[str | None] = [str(c) for c in rng.choice(["red", "green", "blue", "pink"], n)]
    colour[::13] = [None] * len(colour[::13])
    return {"x": x, "few": rng.choice([0.0, 1.0, 2.0, 3.0], n), "colour": colour}


def _expand(current: dict[str, object], weights: np.ndarray) -> dict[str, object]:
    reps = weights.astype(np.int64)
    out: dict[str, object] = {}
    for name, values in current.items():
        if isinstance(values, np.ndarray):
            out[name] = np.repeat(values, reps)
        else:
            out[name] = [v for v, k in zip(values, reps, strict=True) for _ in range(k)]
    return out


@pytest.mark.parametrize("binned", [False, True])
@pytest.mark.parametrize("mode", ["default", "evidently"])
def test_weighted_distances_equal_those_of_the_expanded_sample(binned: bool, mode: str) -> None:
    rng = np.random.default_rng(3)
    reference = _reference(rng, binned)
    current = _current(rng, 600)
    weights = rng.integers(1, 6, 600).astype(np.float64)
    opts = DriftOptions(mode=mode)
    weighted = check(reference, current, opts, weights=weights)
    expanded = check(reference, _expand(current, weights), opts)
    assert [c.name for c in weighted.columns] == ["x", "few", "colour"]
    for w, e in zip(weighted.columns, expanded.columns, strict=True):
        assert (w.current_count, w.current_missing) == (e.current_count, e.current_missing)
        assert w.test == e.test and w.effect == e.effect
        assert w.effect_value == pytest.approx(e.effect_value, rel=1e-9, abs=1e-12)
        assert w.unseen == e.unseen
        for key in DISTANCES:
            if key in e.stats:
                assert w.stats[key] == pytest.approx(e.stats[key], rel=1e-9, abs=1e-12), key
        assert w.plot["current"] == pytest.approx(e.plot["current"], rel=1e-9, abs=1e-12)
        present = weights[~np.isnan(current["x"])] if w.name == "x" else (
            weights[[v is not None for v in current["colour"]]] if w.name == "colour"
            else weights)
        effective = round(present.sum() ** 2 / np.square(present).sum())
        assert w.stats["current_effective_n"] == effective
        assert "current_effective_n" not in e.stats
        # p-values: a sample of the effective size with the weighted shares, never the
        # expanded sample's (repeating a row adds no information)
        if w.test == "ks":
            ref_n = reference.columns[w.name].n
            assert w.pvalue == pytest.approx(stats.ks_pvalue(w.stats["ks"], ref_n, effective))
            assert w.pvalue > e.pvalue


def test_the_chi_square_of_weighted_rows_is_that_of_the_effective_sample() -> None:
    rng = np.random.default_rng(5)
    reference = _reference(rng, False)
    current = _current(rng, 400)
    weights = rng.choice([1.0, 2.5, 7.0], 400)
    col = next(c for c in check(reference, current, weights=weights).columns
               if c.name == "colour")
    present = np.array([v is not None for v in current["colour"]])
    w = weights[present]
    labels = ["red", "green", "blue", "pink"]
    sums = np.array([weights[[v == k for v in current["colour"]]].sum() for k in labels])
    ref_counts = np.array([reference.columns["colour"].counts.get(k, 0) for k in labels])
    scaled = sums * (w.sum() / np.square(w).sum())
    chi, p, _ = stats.chi2_homogeneity(ref_counts, scaled)
    assert col.stats["chi2"] == pytest.approx(chi) and col.pvalue == pytest.approx(p)
    assert col.stats["jensenshannon"] == pytest.approx(stats.js_distance(ref_counts, sums))
    assert col.current_count == round(w.sum())


@pytest.mark.parametrize("binned", [False, True])
def test_weights_of_one_change_nothing(binned: bool) -> None:
    rng = np.random.default_rng(11)
    reference = _reference(rng, binned)
    current = _current(rng, 500)
    plain = check(reference, current).as_dict()
    ones = check(reference, current, weights=np.ones(500)).as_dict()
    assert json_equal(plain, ones)


def json_equal(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("weights, words", [
    (np.ones(3), "3 for columns of [10] rows"),
    (np.r_[np.ones(9), 0.0], "finite numbers > 0"),
    (np.r_[np.ones(9), np.nan], "finite numbers > 0"),
])
def test_bad_weights_are_refused(weights: np.ndarray, words: str) -> None:
    reference = Reference({"x": num.NumericReference.from_values(np.arange(10.0))}, 10, "raw")
    with pytest.raises(BadInput, match=words.replace("[", r"\[").replace("]", r"\]")):
        check(reference, {"x": np.arange(10.0)}, weights=weights)
