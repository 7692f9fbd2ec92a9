"""A numeric column's reference, and one streaming pass of current data against it.

A reference is a sorted grid of points with counts, in one of two forms:

* ``exact``: the grid is every distinct reference value, with how often it
  occurs (built from raw samples). KS and Wasserstein computed against it equal
  scipy's ``ks_2samp`` and ``wasserstein_distance`` on the raw samples.
* binned: the grid is the quantile edges of a dataset profile
  (``appliance.profile/1``), with counts per bin ``[e(i-1), e(i))`` (the last bin
  closed). Statistics are then approximations with stated bounds (below).

Scoring a current column is one pass over it in chunks: one ``np.searchsorted``
per sorted chunk finds each value's place on the grid, and ``np.bincount`` adds
counts and sums per place (against a grid much longer than a chunk, as an exact
reference of continuous values has, the chunk's places are added group by group
instead). The current data is never sorted or copied whole here; memory is
O(grid + chunk). Against a grid of a million points, a caller that can afford one
copy passes the column sorted: every search then walks the grid in order, several
times faster. The places are interleaved: ``2j`` is the open gap below
grid point ``j`` (``2G`` above the last), ``2j + 1`` is grid point ``j`` itself.

Error bounds of the binned form, with p_i, q_i the reference and current
shares of bin i and w_i its width:

* KS: the statistic is evaluated at the edges, where both CDFs are known
  exactly, so ``D_hat <= D <= D_hat + max_i min(p_i, q_i)``; with 1000 quantile
  bins p_i is about 0.001.
* Wasserstein: both CDFs are interpolated linearly inside a bin (the tails
  outside the reference range are exact), so
  ``|W_hat - W| <= sum_i (p_i + q_i) w_i / 2`` (a monotone function differs from
  its chord by at most half the bin's box).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.drift import stats

CHUNK_ROWS = 1 << 16
GRID_BLOCK = 1 << 16  # grid points a step of the exact statistics works on


@dataclass(frozen=True)
class NumericReference:
    grid: np.ndarray  # sorted, strictly increasing
    counts: np.ndarray  # exact: per grid point; binned: per bin (len(grid) - 1)
    exact: bool
    n: int  # present reference values
    std: float  # population std (ddof 0) of the reference values
    mean: float
    missing: int = 0

    @property
    def unique(self) -> int:
        return len(self.grid) if self.exact else len(self.counts)

    @classmethod
    def from_values(cls, values: np.ndarray) -> NumericReference:
        """Exact reference from raw values (NaN is missing)."""
        arr = np.asarray(values, dtype=np.float64)
        present = arr[~np.isnan(arr)]  # the one copy: sorted in place below
        n = len(present)
        std = float(present.std()) if n else 0.0
        mean = float(present.mean()) if n else 0.0
        present.sort()
        # np.unique's steps without its second copy of the column.
        starts = np.flatnonzero(np.r_[True, present[1:] != present[:-1]]) if n else \
            np.empty(0, np.int64)
        grid = present[starts]
        del present
        counts = np.diff(np.r_[starts, n]).astype(np.int64, copy=False)
        return cls(grid=grid, counts=counts, exact=True, n=int(n), std=std, mean=mean,
                   missing=int(len(arr) - n))

    @classmethod
    def from_profile(cls, column: dict[str, Any]) -> NumericReference:
        """Reference from one numeric column of an ``appliance.profile/1`` profile.

        A boolean column and a column with one distinct value are rebuilt exactly
        (their counts follow from the mean); anything else keeps its bins.
        """
        n = int(column.get("count", 0))
        missing = int(column.get("missing", 0))
        mean = float(column.get("mean", 0.0))
        std = float(column.get("std", 0.0))
        bins = column.get("bins")
        if not bins or n == 0:
            return cls(np.empty(0), np.empty(0, np.int64), True, 0, 0.0, 0.0, missing)
        edges = np.asarray(bins["edges"], dtype=np.float64)
        counts = np.asarray(bins["counts"], dtype=np.int64)
        if edges[0] == edges[-1]:
            return cls(edges[:1], np.array([n], np.int64), True, n, std, mean, missing)
        if column.get("type") == "boolean" and edges[0] == 0.0 and edges[-1] == 1.0:
            ones = int(round(mean * n))
            return cls(np.array([0.0, 1.0]), np.array([n - ones, ones], np.int64), True, n,
                       std, mean, missing)
        return cls(edges, counts, False, n, std, mean, missing)


@dataclass
class NumericCounts:
    """What one pass over a current column leaves: counts and sums per grid place."""

    counts: np.ndarray  # len 2G + 1, interleaved gaps and grid points
    sums: np.ndarray  # sum of values per place
    n: int
    missing: int
    extra_values: dict[float, int]  # off-grid values and counts, kept only for tiny grids
    extra_overflow: bool  # more distinct off-grid values than could matter
    # With weights, counts, sums, n, missing and extra_values are sums of weights (floats).

    @property
    def gap_counts(self) -> np.ndarray:
        return self.counts[0::2]

    @property
    def point_counts(self) -> np.ndarray:
        return self.counts[1::2]


# Distinct off-grid values are tracked only while the union could still have
# at most this many distinct values (Evidently's test choice needs to know).
_FEW_VALUES = 5


def accumulate(ref: NumericReference, values: np.ndarray, chunk: int = CHUNK_ROWS,
               weights: np.ndarray | None = None) -> NumericCounts:
    """One streaming pass of ``values`` against the reference grid; with ``weights`` (one
    per value), each value counts as its weight."""
    grid = ref.grid
    g = len(grid)
    counts = np.zeros(2 * g + 1, dtype=np.int64 if weights is None else np.float64)
    sums = np.zeros(2 * g + 1, dtype=np.float64)
    n: Any = 0
    missing: Any = 0
    extra: dict[float, Any] = {}
    track = g <= _FEW_VALUES
    arr = np.asarray(values)
    w = None
    for start in range(0, len(arr), chunk):
        part = np.asarray(arr[start:start + chunk], dtype=np.float64)
        if weights is not None:
            w = np.asarray(weights[start:start + chunk], dtype=np.float64)
        nan = np.isnan(part)
        if nan.any():
            missing += int(nan.sum()) if w is None else float(w[nan].sum())
            part = part[~nan]
            w = None if w is None else w[~nan]
        n += len(part) if w is None else float(w.sum())
        if not len(part):
            continue
        # Sorted, the chunk is searched many times faster (each search starts where the
        # last one ended, in cache) and its places come out grouped. Anything kept per
        # value beside the chunk must be put in the same order (np.argsort) first.
        if w is None:
            part = np.sort(part)
        else:
            order = np.argsort(part, kind="stable")
            part, w = part[order], w[order]
        sparse = 2 * g + 1 > 4 * len(part)
        right = np.searchsorted(grid, part, side="right")
        if g:
            on_point = grid[np.maximum(right - 1, 0)] == part
            on_point &= right > 0
        else:
            on_point = np.zeros(len(part), dtype=bool)
        place = 2 * right - on_point
        if sparse:
            _add_grouped(counts, sums, place, part, w)
        else:
            counts += np.bincount(place, weights=w, minlength=2 * g + 1)
            sums += np.bincount(place, weights=part if w is None else part * w,
                                minlength=2 * g + 1)
        if track and not on_point.all():
            off = part[~on_point]
            seen = set(np.unique(off[: 4 * _FEW_VALUES]).tolist()) | extra.keys()
            if len(seen) + g > _FEW_VALUES:
                track = False
            else:
                found, inverse, many = np.unique(off, return_inverse=True, return_counts=True)
                if w is not None:
                    many = np.bincount(inverse.ravel(), weights=w[~on_point])
                for v, c in zip(found.tolist(), many.tolist(), strict=True):
                    extra[v] = extra.get(v, 0) + c
                track = len(extra) + g <= _FEW_VALUES
    overflow = g <= _FEW_VALUES and not track
    return NumericCounts(counts, sums, n, missing, extra, overflow)


def _add_grouped(counts: np.ndarray, sums: np.ndarray, place: np.ndarray,
                 part: np.ndarray, w: np.ndarray | None = None) -> None:
    """Add a chunk's counts and sums at its places, ``place`` non-decreasing: work in the
    chunk's size, where ``np.bincount`` would allocate and add the whole grid each chunk
    (a raw reference of a million distinct values has a grid of a million points). With
    ``w``, in the chunk's order, each value counts as its weight."""
    starts = np.flatnonzero(np.r_[True, place[1:] != place[:-1]])
    at = place[starts]
    if w is None:
        counts[at] += np.diff(np.r_[starts, len(place)])
        sums[at] += np.add.reduceat(part, starts)
    else:
        counts[at] += np.add.reduceat(w, starts)
        sums[at] += np.add.reduceat(part * w, starts)


# --- statistics from counts -------------------------------------------------


def _edge_cdfs(ref: NumericReference, cur: NumericCounts) -> tuple[np.ndarray, np.ndarray]:
    """Binned form: both CDFs at e0-, e1-, ..., ek-, and at ek (closed)."""
    gaps, points = cur.gap_counts, cur.point_counts
    k = len(ref.counts)
    ref_cum = np.concatenate([[0], np.cumsum(ref.counts)]).astype(np.float64) / ref.n
    # current values strictly below edge i: gaps 0..i plus points 0..i-1
    below = np.cumsum(gaps)[: k + 1] + np.concatenate([[0], np.cumsum(points)[:k]])
    cur_cdf = below.astype(np.float64) / cur.n
    ref_cdf = ref_cum.copy()
    ref_cdf = np.append(ref_cdf, 1.0)
    cur_cdf = np.append(cur_cdf, 1.0 - gaps[-1] / cur.n)
    return ref_cdf, cur_cdf


def ks_statistic(ref: NumericReference, cur: NumericCounts) -> tuple[float, float]:
    """KS statistic and its error bound (0 for an exact reference)."""
    if ref.n == 0 or cur.n == 0:
        return float("nan"), 0.0
    if ref.exact:
        return _exact_ks(ref, cur), 0.0
    ref_cdf, cur_cdf = _edge_cdfs(ref, cur)
    k = len(ref.counts)
    # Skip e_k-: the last bin is closed, so F_ref just below the maximum is unknown.
    diff = np.abs(ref_cdf - cur_cdf)
    d = float(max(np.max(diff[:k]), diff[k + 1]))
    q = _bin_counts(ref, cur) / cur.n
    p = ref.counts / ref.n
    return d, float(np.max(np.minimum(p, q)))


def _exact_ks(ref: NumericReference, cur: NumericCounts) -> float:
    """Largest |F_ref - F_cur| at and just below each grid point, a block of points at a
    time: an exact grid can have as many points as the reference has rows."""
    gaps, points = cur.gap_counts, cur.point_counts
    d = 0.0
    ref_below: Any = 0  # values of each sample below the block
    cur_below: Any = 0
    for s in range(0, len(ref.grid), GRID_BLOCK):
        e = min(s + GRID_BLOCK, len(ref.grid))
        ref_at = ref_below + np.cumsum(ref.counts[s:e])  # reference values <= u(j)
        cur_at = cur_below + np.cumsum(gaps[s:e] + points[s:e])  # current values <= u(j)
        d = max(d, float(np.max(np.abs(ref_at / ref.n - cur_at / cur.n))),
                float(np.max(np.abs((ref_at - ref.counts[s:e]) / ref.n
                                    - (cur_at - points[s:e]) / cur.n))))
        ref_below, cur_below = ref_at[-1], cur_at[-1]  # counts may be weights (floats)
    return d


def _bin_counts(ref: NumericReference, cur: NumericCounts) -> np.ndarray:
    """Binned form: current values per reference bin, the tails outside excluded."""
    gaps, points = cur.gap_counts, cur.point_counts
    k = len(ref.counts)
    inside = points[:k] + gaps[1:k + 1]
    inside[-1] += points[k]
    return inside.astype(np.float64)


def wasserstein(ref: NumericReference, cur: NumericCounts, values: np.ndarray | None = None,
                chunk: int = CHUNK_ROWS,
                weights: np.ndarray | None = None) -> tuple[float, float]:
    """First Wasserstein distance and its error bound (0 for an exact reference).

    The exact form needs the order of current values only inside gaps where
    the two CDFs cross; those few values are gathered in a second, selective
    pass over ``values`` (required for an exact reference), with their ``weights``
    when ``cur`` was accumulated with weights.
    """
    if ref.n == 0 or cur.n == 0:
        return float("nan"), 0.0
    grid = ref.grid
    gaps, points = cur.gap_counts, cur.point_counts
    gsum = cur.sums[0::2]
    m = cur.n
    lo, hi = grid[0], grid[-1]
    tails = (gaps[0] * lo - gsum[0]) / m + (gsum[-1] - gaps[-1] * hi) / m
    if not ref.exact:
        return _binned_wasserstein(ref, cur, tails)
    if len(grid) == 1:
        return float(tails), 0.0
    g = len(grid)
    # F_ref on [u(j-1), u(j)) and F_cur at u(j-1), j = 1..G-1 (cumulative counts in
    # float64 are exact below 2**53), computed in place: the grid can be a million points.
    ref_at = np.cumsum(ref.counts[:-1], dtype=np.float64)
    ref_at /= ref.n
    cur_start = np.cumsum(gaps[:g - 1] + points[:g - 1], dtype=np.float64)
    cur_start /= m
    crossing = np.empty(g - 1, dtype=bool)
    total = float(tails)
    for s in range(0, g - 1, GRID_BLOCK):
        e = min(s + GRID_BLOCK, g - 1)
        at, start, inner = ref_at[s:e], cur_start[s:e], gaps[s + 1:e + 1]
        cross = crossing[s:e]
        np.logical_and(start < at, at < start + inner / m, out=cross)
        width = grid[s + 1:e + 1] - grid[s:e]
        # No crossing: |c w - integral of F_cur| with the integral from counts and sums.
        integral_cur = start * width + (inner * grid[s + 1:e + 1] - gsum[s + 1:e + 1]) / m
        plain = np.abs(at * width - integral_cur)
        total += float(np.sum(plain[~cross]))
    if crossing.any():
        if values is None:
            raise ValueError("exact Wasserstein needs the current values for crossing gaps")
        total += _crossing_integral(grid, ref_at, cur_start, crossing, values, m, chunk,
                                    weights)
    return total, 0.0


def _crossing_integral(grid: np.ndarray, ref_at: np.ndarray, cur_start: np.ndarray,
                       crossing: np.ndarray, values: np.ndarray, m: float, chunk: int,
                       weights: np.ndarray | None = None) -> float:
    """Integral of |F_ref - F_cur| over the gaps where the CDFs cross, from those gaps' values."""
    gap_of: list[np.ndarray] = []
    picked: list[np.ndarray] = []
    picked_w: list[np.ndarray] = []
    arr = np.asarray(values)
    for start in range(0, len(arr), chunk):
        part = np.asarray(arr[start:start + chunk], dtype=np.float64)
        # Sorted: searched faster (see accumulate); the weights follow the same order.
        present = ~np.isnan(part)
        part = part[present]
        if weights is None:
            part = np.sort(part)
        else:
            w = np.asarray(weights[start:start + chunk], dtype=np.float64)[present]
            order = np.argsort(part, kind="stable")
            part, w = part[order], w[order]
        right = np.searchsorted(grid, part, side="right")
        inner = (right > 0) & (right < len(grid))
        inner &= grid[np.clip(right - 1, 0, len(grid) - 1)] != part
        gap = right - 1  # index into the G-1 inner gaps
        sel = inner & crossing[np.clip(gap, 0, len(crossing) - 1)]
        if sel.any():
            gap_of.append(gap[sel])
            picked.append(part[sel])
            if weights is not None:
                picked_w.append(w[sel])
    gap_idx = np.concatenate(gap_of)
    vals = np.concatenate(picked)
    order = np.lexsort((vals, gap_idx))
    gap_idx, vals = gap_idx[order], vals[order]
    # Within each crossing gap: segments [a, x1), [x1, x2), ..., [xk, b).
    starts = np.flatnonzero(np.r_[True, gap_idx[1:] != gap_idx[:-1]])
    if weights is None:  # the current values up to and including this one, within its gap
        rank = np.arange(len(vals)) - np.repeat(starts, np.diff(np.r_[starts, len(vals)]))
        before = rank + 1.0
    else:
        done = np.cumsum(np.concatenate(picked_w)[order])
        offset = np.r_[0.0, done][starts]
        before = done - np.repeat(offset, np.diff(np.r_[starts, len(vals)]))
    c = ref_at[gap_idx]
    f_after = cur_start[gap_idx] + before / m
    seg_end = np.r_[vals[1:], 0.0]
    last = np.r_[gap_idx[1:] != gap_idx[:-1], True]
    seg_end[last] = grid[gap_idx[last] + 1]
    total = float(np.sum(np.abs(c - f_after) * (seg_end - vals)))
    first = starts
    a = grid[gap_idx[first]]
    total += float(np.sum(np.abs(ref_at[gap_idx[first]] - cur_start[gap_idx[first]])
                          * (vals[first] - a)))
    return total


def _binned_wasserstein(ref: NumericReference, cur: NumericCounts, tails: float) -> tuple[float, float]:
    ref_cdf, cur_cdf = _edge_cdfs(ref, cur)
    k = len(ref.counts)
    d0 = (ref_cdf - cur_cdf)[:k]
    d1 = np.r_[(ref_cdf - cur_cdf)[1:k], ref_cdf[k + 1] - cur_cdf[k + 1]]
    width = np.diff(ref.grid)
    same = d0 * d1 >= 0
    a0, a1 = np.abs(d0), np.abs(d1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = np.where(a0 + a1 > 0, (a0**2 + a1**2) / (2 * (a0 + a1)), 0.0)
    area = np.where(same, (a0 + a1) / 2, cross) * width
    p = ref.counts / ref.n
    q = _bin_counts(ref, cur) / cur.n
    bound = float(np.sum((p + q) * width) / 2)
    return float(np.sum(area) + tails), bound


def psi_counts(ref: NumericReference, cur: NumericCounts, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current counts in about ``bins`` reference-quantile bins.

    Neighbouring grid cells are merged until each holds about 1/bins of the
    reference; a heavy single value keeps a bin to itself. Current values
    below or above the reference range fall in the outer bins.
    """
    gaps, points = cur.gap_counts, cur.point_counts
    if ref.exact:
        ref_cells = ref.counts
        # cell j = [u(j), u(j+1)): the point and the gap above it
        cur_cells = points + gaps[1:]
        cur_cells[0] += gaps[0]
    else:
        ref_cells = ref.counts
        cur_cells = _bin_counts(ref, cur)
        cur_cells[0] += gaps[0]
        cur_cells[-1] += gaps[-1]
    # Reference share before each cell (counts are whole numbers: exact), then its group,
    # in place: an exact grid can be a million cells.
    before = np.cumsum(ref_cells, dtype=np.float64)
    before -= ref_cells
    before /= max(ref.n, 1)
    before *= bins
    before += 1e-9
    group = before.astype(np.int64)
    del before
    np.minimum(group, bins - 1, out=group)
    # ``group`` never decreases: each group is a run of neighbouring cells.
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    del group
    return (np.add.reduceat(ref_cells, starts).astype(np.float64),
            np.add.reduceat(cur_cells, starts).astype(np.float64))


def psi_value(ref: NumericReference, cur: NumericCounts, bins: int) -> float:
    if ref.n == 0 or cur.n == 0:
        return float("nan")
    r, c = psi_counts(ref, cur, bins)
    return stats.psi(r, c)


def value_counts(ref: NumericReference, cur: NumericCounts) -> tuple[list[float], np.ndarray, np.ndarray] | None:
    """For a column with at most a few distinct values: the union of values with both counts.

    None when the union has more than a few values or the reference is binned.
    """
    if not ref.exact or cur.extra_overflow:
        return None
    # Sizes first: a grid of thousands of distinct values would be turned into a set only
    # to learn that it has more than a few (40% of a raw-reference check's time).
    if len(ref.grid) > _FEW_VALUES or len(cur.extra_values) > _FEW_VALUES:
        return None
    union = sorted(set(ref.grid.tolist()) | set(cur.extra_values))
    if len(union) > _FEW_VALUES:
        return None
    pos = {v: i for i, v in enumerate(union)}
    r = np.zeros(len(union))
    c = np.zeros(len(union))
    for j, v in enumerate(ref.grid.tolist()):
        r[pos[v]] = ref.counts[j]
        c[pos[v]] = cur.point_counts[j]
    for v, count in cur.extra_values.items():
        c[pos[v]] += count
    return union, r, c
