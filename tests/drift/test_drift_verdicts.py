"""Verdicts on injected shifts, false alarms on unshifted data, and Evidently's test choice."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.datasets.profile import build_profile
from appliance.datasets.table import Table
from appliance.drift import DriftOptions, Reference, check
from appliance.errors import BadInput

N_REF, N_CUR = 20_000, 5_000
CATS = np.array(["a", "b", "c", "d"])
SHARES = np.array([0.5, 0.3, 0.15, 0.05])


def _table(columns: dict[str, object]) -> Table:
    types = {k: ("categorical" if isinstance(v, list) else "numeric") for k, v in columns.items()}
    n = len(next(iter(columns.values())))  # type: ignore[arg-type]
    return Table(list(columns), types, dict(columns), n)


@pytest.mark.parametrize(
    ("label", "mean", "scale", "drifts"),
    [
        ("mean +0.05 sd is negligible", 0.05, 1.0, False),
        ("mean +0.2 sd", 0.2, 1.0, True),
        ("mean +0.3 sd", 0.3, 1.0, True),
        ("mean +0.5 sd", 0.5, 1.0, True),
        ("variance x1.1 is negligible", 0.0, np.sqrt(1.1), False),
        ("variance x1.5", 0.0, np.sqrt(1.5), True),
    ],
)
@pytest.mark.parametrize("source", ["raw", "profile"])
def test_injected_numeric_shift(label: str, mean: float, scale: float, drifts: bool,
                                source: str) -> None:
    rng = np.random.default_rng(sum(map(ord, label)))
    ref_table = _table({"x": rng.normal(size=N_REF)})
    reference = (Reference.from_table(ref_table) if source == "raw"
                 else Reference.from_profile(build_profile(ref_table)))
    report = check(reference, {"x": rng.normal(mean, scale, size=N_CUR)})
    col = report.columns[0]
    assert col.drifted is drifts, (label, col.as_dict()["stats"])
    if not drifts:
        assert col.pvalue_adjusted < 0.05 or col.effect_value < col.effect_threshold


@pytest.mark.parametrize("source", ["raw", "profile"])
def test_permuted_categorical_drifts_and_same_distribution_does_not(source: str) -> None:
    rng = np.random.default_rng(11)
    ref_table = _table({"c": rng.choice(CATS, N_REF, p=SHARES).tolist()})
    reference = (Reference.from_table(ref_table) if source == "raw"
                 else Reference.from_profile(build_profile(ref_table)))
    same = check(reference, {"c": rng.choice(CATS, N_CUR, p=SHARES).tolist()})
    permuted = check(reference, {"c": rng.choice(CATS, N_CUR, p=SHARES[[2, 0, 3, 1]]).tolist()})
    assert not same.columns[0].drifted
    assert permuted.columns[0].drifted and permuted.dataset_drift


def test_no_shift_flags_at_most_one_percent_per_window() -> None:
    rng = np.random.default_rng(5)
    n_features, windows = 200, 3
    ref = {f"f{i}": rng.normal(size=2000) for i in range(n_features)}
    reference = Reference.from_table(_table(ref))
    for _ in range(windows):
        cur = {f"f{i}": rng.normal(size=1000) for i in range(n_features)}
        report = check(reference, cur)
        assert report.drifted_count <= n_features // 100
        assert not report.dataset_drift
    # p-values alone (no correction, no effect size) would flag about 5%: the guard matters
    raw_flags = sum(c.pvalue < 0.05 for c in report.columns)
    assert raw_flags > report.drifted_count


def test_large_sample_negligible_shift_is_significant_but_not_drift() -> None:
    rng = np.random.default_rng(9)
    reference = Reference.from_table(_table({"x": rng.normal(size=200_000)}))
    col = check(reference, {"x": rng.normal(0.03, 1.0, size=200_000)}).columns[0]
    assert col.pvalue < 1e-6
    assert not col.drifted


def test_dataset_share_and_prediction_drift() -> None:
    rng = np.random.default_rng(2)
    ref = {f"f{i}": rng.normal(size=3000) for i in range(4)} | {"pred": rng.random(3000)}
    reference = Reference.from_table(_table(ref))
    cur = {f"f{i}": rng.normal(size=3000) for i in range(4)} | {"pred": rng.random(3000) ** 3}
    cur["f0"] = cur["f0"] + 1.0
    report = check(reference, cur, DriftOptions(share_threshold=0.5), prediction="pred")
    assert report.drifted_count == 1 and report.feature_count == 4
    assert not report.dataset_drift
    assert report.prediction is not None and report.prediction.drifted
    assert report.drift_found
    report = check(reference, cur, DriftOptions(share_threshold=0.25), prediction="pred")
    assert report.dataset_drift


def test_evidently_mode_test_choice() -> None:
    rng = np.random.default_rng(4)
    small = {"num": rng.normal(size=800), "few": rng.integers(0, 4, 800).astype(float),
             "bin": rng.integers(0, 2, 800).astype(float),
             "cat": rng.choice(CATS, 800).tolist()}
    big = {"num": rng.normal(size=5000), "few": rng.integers(0, 4, 5000).astype(float),
           "cat": rng.choice(CATS, 5000).tolist()}
    opts = DriftOptions(mode="evidently")
    r_small = check(Reference.from_table(_table(small)), small, opts)
    assert [c.test for c in r_small.columns] == ["ks", "chi2", "z", "chi2"]
    assert r_small.share_threshold == 0.5
    assert not any(c.drifted for c in r_small.columns)
    shifted = dict(big, num=big["num"] + 0.15)
    r_big = check(Reference.from_table(_table(big)), shifted, opts)
    assert [c.test for c in r_big.columns] == ["wasserstein_normed", "jensenshannon",
                                               "jensenshannon"]
    assert [c.drifted for c in r_big.columns] == [True, False, False]


def test_bad_input_names_the_column() -> None:
    reference = Reference.from_table(_table({"x": np.zeros(5), "c": ["a"] * 5}))
    with pytest.raises(BadInput, match="'c'|c"):
        check(reference, {"x": np.zeros(3)})
    with pytest.raises(BadInput, match="'x'"):
        check(reference, {"x": ["a", "b"], "c": ["a"]})
    with pytest.raises(BadInput, match="mode"):
        DriftOptions(mode="strict")


def test_raw_reference_is_built_a_column_at_a_time_within_the_memory_budget() -> None:
    import tracemalloc

    from appliance.drift.check import MEMORY_BUDGET, RAW_BYTES_PER_ROW

    rows = 400_000
    rng = np.random.default_rng(3)
    ref_table = _table({f"x{i}": rng.normal(size=rows) for i in range(6)})
    cur = {f"x{i}": rng.normal(0.02 * i, 1.0, size=rows) for i in range(6)}
    reference = Reference.from_table(ref_table)
    assert "x0" in reference.columns and "y" not in reference.columns
    assert list(reference.columns) == ref_table.names
    eager = Reference({n: reference.columns[n] for n in ref_table.names}, rows, "raw")
    tracemalloc.start()
    try:
        lazy_report = check(reference, cur, DriftOptions(mode="evidently"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Six exact references of 400k distinct values held at once would take 6 x 6.4 MB
    # before any scoring; a column at a time the peak stays in the budget however many
    # columns there are.
    assert peak <= MEMORY_BUDGET + RAW_BYTES_PER_ROW * rows
    eager_report = check(eager, cur, DriftOptions(mode="evidently"))
    assert lazy_report.as_dict() == eager_report.as_dict()
