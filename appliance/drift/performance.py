"""Performance on labelled windows, and an estimate of it before labels arrive.

The metrics follow their textbook definitions (binary classification with
labels 0/1 and scores P(y = 1); regression with real targets). The estimate
(CBPE, confidence-based performance estimation) assumes a calibrated model:
a row predicted with probability p is right with probability max(p, 1 - p)
at the 0.5 threshold, so the expected accuracy is the mean of that, and the
expected confusion matrix gives expected precision, recall and F1. It is an
estimate, valid only while P(y | x) has not changed, and is labelled so.

Each takes optional ``weights``, one per row (what a row of a sampled request log
stands for): sums and means become weighted ones, so a row of weight k counts as k
rows; without weights, or with weights of 1, the results are the plain ones.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from appliance.errors import BadInput

_EPS = 1e-15  # log loss clips probabilities to [eps, 1 - eps], as is customary


def _arrays(y_true: Any, y_other: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, dtype=np.float64)
    b = np.asarray(y_other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise BadInput(f"labels and predictions differ in shape: {a.shape} vs {b.shape}")
    if not len(a):
        raise BadInput("no labelled rows in the window")
    return a, b


def _weights(weights: Any, n: int) -> np.ndarray | None:
    """Row weights as float64, or None when absent or all 1 (the plain computation)."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise BadInput(f"row weights: expected {n} finite numbers > 0")
    return None if np.all(w == 1.0) else w


def _mean(values: np.ndarray, w: np.ndarray | None) -> float:
    return float(np.mean(values)) if w is None else float(np.sum(values * w) / np.sum(w))


def _sum(mask: np.ndarray, w: np.ndarray | None) -> float:
    return float(np.sum(mask)) if w is None else float(np.sum(w[mask]))


def classification_metrics(y_true: Any, scores: Any, threshold: float = 0.5,
                           weights: Any = None) -> dict[str, float]:
    """Accuracy, precision, recall, F1, ROC AUC and log loss of binary scores."""
    y, p = _arrays(y_true, scores)
    if not np.isin(y, (0.0, 1.0)).all():
        raise BadInput("binary labels must be 0 or 1")
    w = _weights(weights, len(y))
    pred = p >= threshold
    pos = y == 1
    tp = _sum(pred & pos, w)
    fp = _sum(pred & ~pos, w)
    fn = _sum(~pred & pos, w)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    clipped = np.clip(p, _EPS, 1 - _EPS)
    log_loss = -_mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped), w)
    return {"accuracy": _mean(pred == pos, w), "precision": precision, "recall": recall,
            "f1": f1, "roc_auc": roc_auc(y, p, w), "log_loss": log_loss, "count": float(len(y))}


def roc_auc(y_true: Any, scores: Any, weights: Any = None) -> float:
    """Area under the ROC curve: the Mann-Whitney probability that a positive outranks a
    negative, ties counting one half (weighted: over pairs, each weighing the product of
    its rows' weights). NaN when one class is absent."""
    y, s = _arrays(y_true, scores)
    w = _weights(weights, len(y))
    if w is not None:
        return _weighted_auc(y, s, w)
    n_pos = float(np.sum(y == 1))
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy import stats as sps  # here: scipy takes a second to import

    ranks = sps.rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _weighted_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    pos = y == 1
    w_pos, w_neg = float(w[pos].sum()), float(w[~pos].sum())
    if w_pos == 0 or w_neg == 0:
        return float("nan")
    values, group = np.unique(s, return_inverse=True)
    group = group.ravel()
    pos_at = np.bincount(group[pos], weights=w[pos], minlength=len(values))
    neg_at = np.bincount(group[~pos], weights=w[~pos], minlength=len(values))
    neg_below = np.cumsum(neg_at) - neg_at
    return float(np.sum(pos_at * (neg_below + neg_at / 2)) / (w_pos * w_neg))


def regression_metrics(y_true: Any, y_pred: Any, weights: Any = None) -> dict[str, float]:
    """MAE, RMSE and R^2 (1 - SS_res / SS_tot; NaN when the targets are constant)."""
    y, p = _arrays(y_true, y_pred)
    w = _weights(weights, len(y))
    err = y - p
    if w is None:
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        ss_res = float(np.sum(err**2))
    else:
        ss_tot = float(np.sum(w * (y - _mean(y, w)) ** 2))
        ss_res = float(np.sum(w * err**2))
    return {"mae": _mean(np.abs(err), w), "rmse": float(math.sqrt(_mean(err**2, w))),
            "r2": 1 - ss_res / ss_tot if ss_tot else float("nan"),
            "count": float(len(y))}


def estimate_classification(scores: Any, threshold: float = 0.5) -> dict[str, Any]:
    """CBPE-style expected accuracy, precision, recall and F1 from calibrated scores alone."""
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim != 1 or not len(p):
        raise BadInput("no scores in the window")
    if np.any((p < 0) | (p > 1)) or np.isnan(p).any():
        raise BadInput("scores must be probabilities in [0, 1]")
    pred = p >= threshold
    correct = np.where(pred, p, 1 - p)
    tp = float(np.sum(p[pred]))
    fp = float(np.sum(1 - p[pred]))
    fn = float(np.sum(p[~pred]))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = float(correct.mean())
    return {
        "estimate": True,
        "method": "CBPE (expected values from calibrated confidence; assumes P(y|x) unchanged)",
        "accuracy": accuracy,
        "accuracy_stderr": float(math.sqrt(np.sum(correct * (1 - correct))) / len(p)),
        "precision": precision, "recall": recall, "f1": f1, "count": float(len(p)),
    }
