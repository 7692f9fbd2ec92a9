"""Data and prediction drift of a current sample against a reference: per column and overall.

Two modes (see docs/drift.md for the reasoning):

* ``default``: a column drifts when its shift is both significant and material:
  the test's p-value, Holm-corrected across all columns of the check, is below
  ``alpha``, AND its effect size passes a threshold (numeric: normed Wasserstein
  distance or PSI; categorical: Jensen-Shannon distance). A large sample then
  does not alarm on a negligible shift, and a small one does not alarm on noise.
* ``evidently``: Evidently 0.7's default test per column and its thresholds,
  for users who migrate and expect the same verdicts.

The dataset drifts when the share of drifted feature columns reaches
``share_threshold``. A prediction (or target) column is scored the same way
and reported on its own.

Weighted current rows (a request log that kept a sample beyond its rate, each row
weighted by 1 / its keep probability): distances (KS statistic, Wasserstein, PSI,
Jensen-Shannon) are computed on the weighted distribution, and equal those of a
sample where each row is repeated ``weight`` times. Test p-values (KS, chi-square,
z) are computed as for a sample of Kish's effective size (sum w)^2 / sum w^2 with
the weighted shares, since repeating rows adds no information; with every weight 1
that is the sample itself, and every result is the unweighted one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.datasets.table import Table
from appliance.drift import categorical as cat
from appliance.drift import numeric as num
from appliance.drift import stats
from appliance.errors import BadInput

MODES = ("default", "evidently")

# Evidently 0.7's defaults, used as they are in evidently mode.
EV_SMALL_REFERENCE = 1000
EV_FEW_VALUES = 5
EV_PVALUE = 0.05
EV_DISTANCE = 0.1
EV_SHARE = 0.5
EV_MIN_STD = 0.001

MAX_THREADS = 8
# Scoring a numeric column against its raw reference rows holds about this many bytes a
# row at its peak (the distinct values and their counts, the current column sorted, the
# current counts and sums per grid place, and Wasserstein's cumulative shares): 84 MB
# measured at a million rows.
RAW_BYTES_PER_ROW = 88
MEMORY_BUDGET = 96 << 20


@dataclass(frozen=True)
class DriftOptions:
    mode: str = "default"
    alpha: float = 0.05
    wasserstein_threshold: float = 0.1
    psi_threshold: float = 0.2
    js_threshold: float = 0.1
    share_threshold: float = 0.3
    psi_bins: int = 10

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadInput(f"drift mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if not 0 < self.alpha < 1:
            raise BadInput(f"drift alpha {self.alpha}: expected a number between 0 and 1")
        if not 0 < self.share_threshold <= 1:
            raise BadInput(f"drift share threshold {self.share_threshold}: expected (0, 1]")
        if self.psi_bins < 2:
            raise BadInput(f"drift PSI bins {self.psi_bins}: expected at least 2")

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> DriftOptions:
        values = {
            "mode": config["drift.mode"],
            "alpha": config["drift.alpha"],
            "wasserstein_threshold": config["drift.wasserstein_threshold"],
            "psi_threshold": config["drift.psi_threshold"],
            "js_threshold": config["drift.js_threshold"],
            "share_threshold": config["drift.share_threshold"],
            "psi_bins": config["drift.psi_bins"],
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


ColumnReference = num.NumericReference | cat.CategoricalReference


class RawColumns(Mapping[str, ColumnReference]):
    """A table's columns as references, each built when it is asked for and not kept.

    An exact reference holds every distinct value of its column; built all at once, the
    references of a wide table of a million rows take hundreds of MB, while a check needs
    only the columns it is scoring at the moment.
    """

    def __init__(self, table: Table) -> None:
        self.table = table

    def __getitem__(self, name: str) -> ColumnReference:
        values = self.table.columns[name]
        if self.table.types[name] == "categorical":
            return cat.CategoricalReference.from_values(values)
        return num.NumericReference.from_values(values)

    def __contains__(self, name: object) -> bool:
        return name in self.table.types

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.names)

    def __len__(self) -> int:
        return len(self.table.names)


@dataclass(frozen=True)
class Reference:
    """What drift is measured against: per column, exact counts or a profile's bins."""

    columns: Mapping[str, ColumnReference]
    row_count: int
    source: str  # "raw" or "profile"

    @classmethod
    def from_table(cls, table: Table) -> Reference:
        return cls(RawColumns(table), table.row_count, "raw")

    def is_numeric(self, name: str) -> bool:
        if isinstance(self.columns, RawColumns):
            return self.columns.table.types[name] != "categorical"
        return isinstance(self.columns[name], num.NumericReference)

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any]) -> Reference:
        if profile.get("format") != "appliance.profile/1":
            raise BadInput(f"reference profile format {profile.get('format')!r} is not "
                           "'appliance.profile/1'")
        cols: dict[str, ColumnReference] = {}
        for name, column in profile["columns"].items():
            if column.get("type") == "categorical":
                cols[name] = cat.CategoricalReference.from_profile(column)
            else:
                cols[name] = num.NumericReference.from_profile(column)
        return cls(cols, int(profile.get("row_count", 0)), "profile")


@dataclass
class ColumnDrift:
    name: str
    kind: str  # numeric or categorical
    role: str  # feature or prediction
    test: str  # the test whose p-value or distance decided
    stats: dict[str, float]
    reference_count: int
    current_count: int
    current_missing: int
    pvalue: float = float("nan")
    pvalue_adjusted: float = float("nan")
    effect: str = ""
    effect_value: float = float("nan")
    effect_threshold: float = float("nan")
    drifted: bool = False
    unseen: dict[str, int] = field(default_factory=dict)
    plot: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return None if x != x or x in (float("inf"), float("-inf")) else float(x)

        return {
            "name": self.name, "kind": self.kind, "role": self.role, "test": self.test,
            "drifted": self.drifted,
            "pvalue": clean(self.pvalue), "pvalue_adjusted": clean(self.pvalue_adjusted),
            "effect": self.effect, "effect_value": clean(self.effect_value),
            "effect_threshold": clean(self.effect_threshold),
            "stats": {k: clean(v) for k, v in self.stats.items()},
            "reference_count": self.reference_count, "current_count": self.current_count,
            "current_missing": self.current_missing, "unseen_categories": self.unseen,
            "plot": self.plot,
        }


@dataclass
class DriftReport:
    mode: str
    reference_source: str
    columns: list[ColumnDrift]
    share_threshold: float
    drifted_count: int
    feature_count: int
    share: float
    dataset_drift: bool
    prediction: ColumnDrift | None
    current: str = ""  # what the current rows are, when the caller says (a request log's)

    @property
    def drift_found(self) -> bool:
        return self.dataset_drift or bool(self.prediction and self.prediction.drifted)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "reference": self.reference_source,
            **({"current": self.current} if self.current else {}),
            "dataset_drift": self.dataset_drift, "drift_found": self.drift_found,
            "drifted_features": self.drifted_count, "features": self.feature_count,
            "drifted_share": self.share, "share_threshold": self.share_threshold,
            "prediction": self.prediction.as_dict() if self.prediction else None,
            "columns": [c.as_dict() for c in self.columns],
        }


# --- per column ---------------------------------------------------------------


def _effective(weights: np.ndarray | None, present: np.ndarray, n: float) -> tuple[int, float]:
    """The sample size tests use (Kish's effective size of the present values' weights), and
    the factor that scales weighted counts to it; (n, 1.0) without weights."""
    if weights is None:
        return int(n), 1.0
    w = weights[present]
    total, squares = float(w.sum()), float(np.square(w).sum())
    if total <= 0 or squares <= 0:
        return 0, 1.0
    eff = total * total / squares
    return max(1, int(round(eff))), eff / total


def _numeric_column(name: str, ref: num.NumericReference, values: np.ndarray,
                    opts: DriftOptions, weights: np.ndarray | None = None) -> ColumnDrift:
    if ref.exact and weights is None:
        # Sorted once, the column is searched on the grid in order by every pass below: at
        # a million rows against a grid of a million points, a quarter of the time of
        # searching sorted chunks, whose neighbours lie far apart on the grid.
        values = np.sort(np.asarray(values, dtype=np.float64))  # NaN (missing) sort last
    counts = num.accumulate(ref, values, weights=weights)
    col = ColumnDrift(name, "numeric", "feature", "", {}, ref.n, int(round(counts.n)),
                      int(round(counts.missing)))
    col.plot = _numeric_plot(ref, counts)
    if ref.n == 0 or counts.n == 0:
        col.test = "none (no values)"
        return col
    n_test, scale = int(counts.n), 1.0
    if weights is not None:
        n_test, scale = _effective(weights, ~np.isnan(np.asarray(values, dtype=np.float64)),
                                   counts.n)
    d, d_bound = num.ks_statistic(ref, counts)
    w, w_bound = num.wasserstein(ref, counts, values, weights=weights)
    norm = max(ref.std, EV_MIN_STD)
    col.stats = {
        "ks": d, "ks_pvalue": stats.ks_pvalue(d, ref.n, n_test), "ks_bound": d_bound,
        "wasserstein": w, "wasserstein_normed": w / norm, "wasserstein_bound": w_bound,
        "psi": num.psi_value(ref, counts, opts.psi_bins),
        "reference_mean": ref.mean, "reference_std": ref.std,
        "current_mean": float(counts.sums.sum() / counts.n),
    }
    if weights is not None:
        col.stats["current_effective_n"] = float(n_test)
    few = num.value_counts(ref, counts)
    if few is not None and scale != 1.0:
        few = (few[0], few[1], few[2] * scale)  # counts of the effective size, for the tests
    if opts.mode == "evidently":
        _evidently_numeric(col, ref, counts, few)
        return col
    if few is not None:
        _, r, c = few
        chi, p, _ = stats.chi2_homogeneity(r, c)
        col.test, col.pvalue = "chi2", p
        col.stats.update(chi2=chi, chi2_pvalue=p)
    else:
        col.test, col.pvalue = "ks", col.stats["ks_pvalue"]
    wn, ps = col.stats["wasserstein_normed"], col.stats["psi"]
    if ps >= opts.psi_threshold and wn < opts.wasserstein_threshold:
        col.effect, col.effect_value, col.effect_threshold = "psi", ps, opts.psi_threshold
    else:
        col.effect, col.effect_value = "wasserstein_normed", wn
        col.effect_threshold = opts.wasserstein_threshold
    return col


def _evidently_numeric(col: ColumnDrift, ref: num.NumericReference, counts: num.NumericCounts,
                       few: tuple[list[float], np.ndarray, np.ndarray] | None) -> None:
    if ref.n <= EV_SMALL_REFERENCE:
        if few is not None:
            _, r, c = few
            _evidently_small_categorical(col, r, c)
        else:
            col.test, col.pvalue = "ks", col.stats["ks_pvalue"]
            col.drifted = col.pvalue < EV_PVALUE
        return
    if few is not None:
        _, r, c = few
        col.test = col.effect = "jensenshannon"
        col.effect_value = stats.js_distance(r, c)
    else:
        col.test = col.effect = "wasserstein_normed"
        col.effect_value = col.stats["wasserstein_normed"]
    col.effect_threshold = EV_DISTANCE
    col.drifted = col.effect_value >= EV_DISTANCE


def _evidently_small_categorical(col: ColumnDrift, r: np.ndarray, c: np.ndarray) -> None:
    """Chi-square goodness of fit (more than two values) or two-proportion z-test."""
    n_ref, n_cur = r.sum(), c.sum()
    if len(r) > 2:
        chi, p = stats.chi2_goodness_of_fit(c, r * (n_cur / n_ref))
        col.test, col.pvalue = "chi2", p
        col.stats.update(chi2=chi, chi2_pvalue=p)
    else:
        if (r > 0).sum() == 1 and (c > 0).sum() == 1 and np.argmax(r) == np.argmax(c):
            p = 1.0
        else:  # share of values other than the smallest key, as Evidently counts
            p = stats.two_proportion_z_pvalue(int(round(n_ref - r[0])), int(round(n_ref)),
                                              int(round(n_cur - c[0])), int(round(n_cur)))
        col.test, col.pvalue = "z", p
        col.stats["z_pvalue"] = p
    col.drifted = bool(col.pvalue < EV_PVALUE)


def _categorical_column(name: str, ref: cat.CategoricalReference, values: Any,
                        opts: DriftOptions, weights: np.ndarray | None = None) -> ColumnDrift:
    laid, _ = cat.cells(ref, values, weights)
    col = ColumnDrift(name, "categorical", "feature", "", {}, ref.n, int(round(laid.n)),
                      int(round(laid.missing)),
                      unseen={k: int(round(v)) for k, v in laid.unseen.items()})
    col.plot = {"labels": laid.labels[:30], "reference": _shares(laid.ref)[:30],
                "current": _shares(laid.cur)[:30]}
    if ref.n == 0 or laid.n == 0:
        col.test = "none (no values)"
        return col
    scale = 1.0
    if weights is not None:
        present = np.array([not cat._is_missing(v) for v in values], dtype=bool)
        n_test, scale = _effective(weights, present, laid.n)
    tested = laid.cur * scale  # counts of the effective size, for the tests
    chi, p, _ = stats.chi2_homogeneity(laid.ref, tested)
    js = stats.js_distance(laid.ref, laid.cur)
    col.stats = {"chi2": chi, "chi2_pvalue": p, "jensenshannon": js,
                 "psi": stats.psi(laid.ref, laid.cur)}
    if weights is not None:
        col.stats["current_effective_n"] = float(n_test)
    if opts.mode == "evidently":
        keep = (laid.ref + laid.cur) > 0
        r, c = laid.ref[keep], tested[keep]
        if ref.n <= EV_SMALL_REFERENCE:
            order = np.argsort(np.array(laid.labels, dtype=object)[keep].astype(str), kind="stable")
            _evidently_small_categorical(col, r[order], c[order])
        else:
            col.test = col.effect = "jensenshannon"
            col.effect_value, col.effect_threshold = js, EV_DISTANCE
            col.drifted = js >= EV_DISTANCE
        return col
    col.test, col.pvalue = "chi2", p
    col.effect, col.effect_value, col.effect_threshold = "jensenshannon", js, opts.js_threshold
    return col


def _shares(counts: np.ndarray) -> list[float]:
    total = float(np.sum(counts))
    return [float(x) / total if total else 0.0 for x in counts]


def _numeric_plot(ref: num.NumericReference, counts: num.NumericCounts, bins: int = 30) -> dict[str, Any]:
    """Both samples on equal-width bins over the reference range, for the HTML report."""
    if ref.n == 0 or not len(ref.grid):
        return {}
    lo, hi = float(ref.grid[0]), float(ref.grid[-1])
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    if ref.exact:
        ref_pos, ref_w = ref.grid, ref.counts
    else:
        ref_pos = (ref.grid[:-1] + ref.grid[1:]) / 2
        ref_w = ref.counts
    gaps, points = counts.gap_counts, counts.point_counts
    with np.errstate(invalid="ignore", divide="ignore"):
        gap_mid = np.where(gaps > 0, counts.sums[0::2] / np.maximum(gaps, 1), 0.0)

    def hist(pos: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Weights per bin of positions in increasing order: the outer bins take what lies
        beyond the edges. A few searches of the edges among the positions, not one of
        each position among the edges (a grid can be a million points)."""
        cut = np.searchsorted(pos, edges[1:-1], side="left")  # positions below each inner edge
        starts, ends = np.r_[0, cut], np.r_[cut, len(pos)]
        full = starts < ends  # reduceat would give an empty bin its next value: left out
        sums = np.zeros(bins)
        if full.any():
            sums[full] = np.add.reduceat(w, starts[full])
        return sums

    # Current values on grid points, and those in each occupied gap at their mean (gaps
    # follow one another, so their means are in order too): binned apart, as an exact
    # grid and its gaps can be a million places each.
    occupied = np.flatnonzero(gaps)
    return {"edges": edges.tolist(), "reference": _shares(hist(ref_pos, ref_w)),
            "current": _shares(hist(ref.grid, points)
                               + hist(gap_mid[occupied], gaps[occupied]))}


# --- the whole check ------------------------------------------------------------


def check(reference: Reference, current: Mapping[str, Any], options: DriftOptions | None = None,
          *, prediction: str | None = None, columns: list[str] | None = None,
          weights: np.ndarray | None = None) -> DriftReport:
    """Score every reference column present in ``current`` and decide.

    ``current`` maps a column name to a float array (numeric, boolean and
    timestamp columns; NaN missing) or a sequence of str (categorical; None missing).
    ``weights``: one positive number per current row, what the row stands for (see the
    module docstring); None, or all ones, is the plain sample.
    """
    opts = options or DriftOptions()
    names = columns if columns is not None else list(reference.columns)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        lengths = {len(current[n]) for n in names if n in current}
        if weights.ndim != 1 or lengths - {len(weights)}:
            raise BadInput(f"drift weights: {len(weights)} for columns of {sorted(lengths)} rows")
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise BadInput("drift weights must be finite numbers > 0")
        if np.all(weights == 1.0):
            weights = None
    missing = [n for n in names if n not in current]
    if missing:
        raise BadInput(f"columns {missing} are in the reference but not in the current data")
    if prediction is not None and prediction not in reference.columns:
        raise BadInput(f"prediction column '{prediction}' is not in the reference")
    for name in names:
        values = current[name]
        if reference.is_numeric(name) and (
            not isinstance(values, np.ndarray) or values.dtype.kind not in "fiub"
        ):
            raise BadInput(f"column '{name}' is numeric in the reference but not in the "
                           "current data")

    def score(name: str) -> ColumnDrift:
        ref = reference.columns[name]
        if isinstance(ref, num.NumericReference):
            col = _numeric_column(name, ref, current[name], opts, weights)
        else:
            col = _categorical_column(name, ref, current[name], opts, weights)
        col.role = "prediction" if name == prediction else "feature"
        return col

    # Columns are independent and numpy's searchsorted and bincount release the
    # GIL, so threads score several numeric columns at once; as many as fit in
    # MEMORY_BUDGET where each builds an exact reference from raw rows.
    workers = min(len(names), os.cpu_count() or 1, MAX_THREADS)
    if isinstance(reference.columns, RawColumns):
        per_column = RAW_BYTES_PER_ROW * max(reference.row_count, 1)
        workers = max(1, min(workers, MEMORY_BUDGET // per_column))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(score, names))
    else:
        results = [score(name) for name in names]
    if opts.mode == "default":
        adjusted = stats.holm([c.pvalue for c in results])
        for col, p in zip(results, adjusted, strict=True):
            col.pvalue_adjusted = p
            col.drifted = bool(p < opts.alpha and col.effect_value >= col.effect_threshold)
        share_threshold = opts.share_threshold
    else:
        share_threshold = EV_SHARE
    features = [c for c in results if c.role == "feature"]
    drifted = sum(1 for c in features if c.drifted)
    share = drifted / len(features) if features else 0.0
    pred = next((c for c in results if c.role == "prediction"), None)
    return DriftReport(opts.mode, reference.source, results, share_threshold, drifted,
                       len(features), share, bool(features) and share >= share_threshold, pred)
