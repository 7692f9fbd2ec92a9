"""ADWIN and Page-Hinkley on synthetic error streams; performance metrics and the CBPE estimate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from appliance.drift.detectors import ADWIN, PageHinkley, first_detection
from appliance.drift.performance import (
    classification_metrics,
    estimate_classification,
    regression_metrics,
    roc_auc,
)
from appliance.errors import BadInput

CHANGE, LENGTH = 2000, 4000


def _streams(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    stationary = (rng.random(LENGTH) < 0.2).astype(float)
    changed = np.r_[rng.random(CHANGE) < 0.2, rng.random(LENGTH - CHANGE) < 0.5].astype(float)
    return stationary, changed


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("make", [ADWIN, PageHinkley])
def test_detects_change_within_bounded_delay_and_no_false_alarm(make: type, seed: int) -> None:
    stationary, changed = _streams(seed)
    assert first_detection(make(), stationary) is None
    at = first_detection(make(), changed)
    assert at is not None and CHANGE <= at <= CHANGE + 400


def test_defaults_are_the_standard_ones() -> None:
    a, p = ADWIN(), PageHinkley()
    assert (a.delta, a.clock, a.max_buckets, a.min_window_length, a.grace_period) == (
        0.002, 32, 5, 5, 10)
    assert (p.min_instances, p.delta, p.threshold, p.alpha) == (30, 0.005, 50.0, 0.9999)


def test_adwin_window_tracks_the_new_mean() -> None:
    _, changed = _streams(9)
    detector = ADWIN()
    for value in changed:
        detector.update(value)
    assert detector.n_detections >= 1
    assert abs(detector.estimation - 0.5) < 0.06
    assert detector.width < LENGTH


def test_page_hinkley_detects_a_decrease_too() -> None:
    rng = np.random.default_rng(3)
    stream = np.r_[rng.normal(5, 1, 1000), rng.normal(3, 1, 1000)]
    at = first_detection(PageHinkley(), stream)
    assert at is not None and 1000 <= at <= 1100


def test_classification_metrics() -> None:
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.4, 0.8, 0.6, 0.1, 0.7, 0.3])
    m = classification_metrics(y, p)
    # predictions 1,0,0,1,1,0,1,0: tp 3, fp 1, fn 1, tn 3
    assert m["accuracy"] == 0.75 and m["precision"] == 0.75 and m["recall"] == 0.75
    assert m["f1"] == pytest.approx(0.75)
    u = sps.mannwhitneyu(p[y == 1], p[y == 0]).statistic
    assert m["roc_auc"] == pytest.approx(u / 16)
    expect = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert m["log_loss"] == pytest.approx(expect)
    assert roc_auc([1, 1], [0.2, 0.3]) != roc_auc([1, 1], [0.2, 0.3])  # NaN: one class
    with pytest.raises(BadInput):
        classification_metrics([0, 2], [0.1, 0.2])


def test_regression_metrics() -> None:
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.0, 5.0])
    assert m["mae"] == pytest.approx(0.625)
    assert m["rmse"] == pytest.approx(np.sqrt(2.25 / 4))
    assert m["r2"] == pytest.approx(1 - 2.25 / 5)


def test_cbpe_estimate_matches_realised_accuracy_when_calibrated() -> None:
    rng = np.random.default_rng(0)
    scores = rng.beta(2, 2, 50_000)
    labels = (rng.random(50_000) < scores).astype(float)  # calibrated by construction
    est = estimate_classification(scores)
    real = classification_metrics(labels, scores)
    assert est["estimate"] is True and "CBPE" in est["method"]
    assert abs(est["accuracy"] - real["accuracy"]) < 4 * est["accuracy_stderr"] + 1e-3
    assert abs(est["f1"] - real["f1"]) < 0.01
    with pytest.raises(BadInput):
        estimate_classification([0.5, 1.5])
