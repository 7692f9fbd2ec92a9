"""The capacity report: measured demand against what the box serves, and how to set
serving so that it does.

For each model in the request log since a time:

1. **Demand.** Arrivals (a request's end less its latency) counted per minute, from the
   first to the last: requests (and rows or tokens) per second at the median minute, the
   95th percentile and the peak. Utilisation is the share of each minute the model spent
   computing (each request's compute time, split among the requests of its run).
2. **Service time.** t = a + c·b + d·k for a run of b rows from k requests
   (``appliance.capacity.fit``), fitted on the version's newest capacity profile, where
   the measured time divided among the runs is what a run occupies the model for; without
   a profile, on the median compute time of logged requests against the size of their
   run. A language model's step time against the sequences in a step is fitted on its
   profile (the log does not say how many sequences shared a step).
3. **Replay.** The busiest ``capacity.replay_minutes`` of the log are replayed
   (``appliance.capacity.simulate``): each request decoded by the event loop (d), then
   batched, each run taking a + c·b, all scaled by factors drawn from the spread the log
   shows about t; first at the settings serving has now, where the prediction is set
   beside the p95 the log shows, then at every candidate setting. The recommendation is
   the shortest delay, then the largest batch limit, among those within ``TIE`` of the
   lowest predicted p95.
4. **Capacity.** The replay is repeated with the arrivals compressed or stretched in time
   to find the highest rate at which the predicted p95 stays within the SLO (and never
   above what the box sustains, full runs back to back); the peak demand is set against
   it, and the report says plainly when the peak is more than this box can serve within
   the SLO, and by how much.
5. **Memory to reserve.** Weights, plus the memory each row of a run adds (measured by
   the profile), at the recommended batch size; for a language model the KV cache, 2 ×
   layers × KV heads × head size × bytes × context × concurrent sequences, at the peak
   concurrency the log shows.

A model with too few requests, or whose service time can not be fitted, gets ``enough:
false`` and ``missing``: what data would make the report.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from appliance.capacity import simulate, store
from appliance.capacity.fit import ServiceTime, fit
from appliance.config import Config
from appliance.errors import NotFound
from appliance.storage.db import Database

DELAYS_US = (0, 100, 250, 500, 1000, 2000, 5000)
TIE = 0.05  # predicted p95s within 5% of the best are equally good: the replay is no finer
MAX_REPLAY = 50_000  # requests replayed at most (the newest of the busiest window)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def per_minute(arrivals: np.ndarray, weights: np.ndarray | None = None) -> dict[str, Any]:
    """Rates per second from counts per minute (every minute from the first to the last
    arrival, idle ones included): p50, p95, peak and the peak's minute."""
    if not len(arrivals):
        return {"p50": 0.0, "p95": 0.0, "peak": 0.0, "peak_minute": None, "minutes": 0}
    minutes = (arrivals // 60).astype(np.int64)
    first = int(minutes.min())
    counts = np.bincount(minutes - first, weights=weights)
    peak = int(np.argmax(counts))
    return {"p50": round(float(np.percentile(counts, 50)) / 60, 3),
            "p95": round(float(np.percentile(counts, 95)) / 60, 3),
            "peak": round(float(counts[peak]) / 60, 3),
            "peak_minute": _iso((first + peak) * 60), "minutes": int(len(counts))}


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _scale_within(predict: Callable[[float], float], slo_s: float, hi: float) -> float:
    """The largest factor, up to ``hi``, by which the arrivals may be sped up (>1) or must
    be slowed (<1) with the predicted p95 within ``slo_s``; 0 when even 1/1024 is not."""
    lo = 1 / 1024
    if predict(lo) > slo_s:
        return 0.0
    if predict(hi) <= slo_s:
        return hi
    for _ in range(30):
        mid = math.sqrt(lo * hi)
        if predict(mid) <= slo_s:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.01:
            break
    return lo


def _rate(arrivals: np.ndarray) -> float:
    """Requests per second over the replayed window (at least a second long)."""
    return len(arrivals) / max(float(arrivals[-1] - arrivals[0]), 1.0) if len(arrivals) else 0.0


def _figure(value: float) -> str:
    """Four significant digits, and whole with separators from 10,000 up (21,330, not
    2.133e+04)."""
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def _verdict(peak: float, within: float, unit: str, slo_ms: float) -> tuple[str, float]:
    """A sentence for the peak against the rate served within the SLO, and the headroom
    (share of that rate left at the peak; negative when over)."""
    if within <= 0:
        return (f"even a trickle of this traffic is predicted above the SLO of {slo_ms:g} ms "
                "p95: the model is slower than the SLO by itself", -1.0)
    headroom = 1.0 - peak / within
    if headroom >= 0:
        return (f"the peak of {_figure(peak)} {unit} is within what this box serves at p95 ≤ "
                f"{slo_ms:g} ms (about {_figure(within)} {unit}): {headroom:.0%} headroom",
                headroom)
    return (f"the peak of {_figure(peak)} {unit} EXCEEDS what this box serves at p95 ≤ "
            f"{slo_ms:g} ms (about {_figure(within)} {unit}) by {peak / within - 1:.0%}",
            headroom)


def _served_version(db: Database, name: str, logged: int) -> int:
    row = db.execute(
        "SELECT v.version FROM aliases a JOIN models m ON m.id = a.model_id"
        " JOIN model_versions v ON v.id = a.version_id WHERE m.name = ? AND a.alias ="
        " 'production'", [name]).fetchone()
    return int(row[0]) if row else logged


def _profile(db: Database, name: str, version: int) -> dict[str, Any] | None:
    try:
        return store.latest(db, f"{name}@{version}")
    except NotFound:
        return None


# ---- tabular models ------------------------------------------------------------------


def _tabular(mon: Database, db: Database, config: Config,
             name: str, since: float, until: float, slo_s: float) -> dict[str, Any]:
    rows = mon.execute(
        "SELECT ts - latency_us / 1e6, latency_us, queue_us, batch_size, rows, version"
        " FROM requests WHERE model = ? AND ts >= ? AND ts < ? AND status < 400"
        " AND route != 'shadow' ORDER BY ts", [name, since, until]).fetchall()
    data = np.array([r[:5] for r in rows], dtype=np.float64).reshape(-1, 5)
    order = np.argsort(data[:, 0], kind="stable")
    data = data[order]
    arrivals, latency, queue, batch, req_rows = (data[:, i] for i in range(5))
    logged = int(rows[-1][5]) if rows else 0
    version = _served_version(db, name, logged)
    profile = _profile(db, name, version) if version else None
    current = {"max_batch_size": config["serving.max_batch_size"],
               "max_queue_delay_us": config["serving.max_queue_delay_us"]}
    out: dict[str, Any] = {"model": name, "kind": "tabular", "version": version,
                           "requests": len(rows), "settings_now": current,
                           "profile_id": profile["id"] if profile else None, "missing": []}
    minimum = config["capacity.min_requests"]
    if len(rows) < minimum:
        out["missing"].append(f"only {len(rows)} answered requests since {_iso(since)}; the "
                              f"report needs {minimum} (capacity.min_requests)")
    # Service time: a profile measures what a run occupies the model for, all its work
    # counted; the log only each request's own compute time (its share of the others'
    # decoding is missing), so it is used alone only where there is no profile.
    points: list[tuple[float, float, float, float]] = []
    compute = np.maximum(latency - queue, 0) / 1e6
    if profile:
        for point in profile["points"]:
            measured = point.get("service")
            if isinstance(measured, dict):
                points.append((measured["rows"], measured["requests"],
                               measured["period_us"] / 1e6, float(point["windows"])))
        sources = [f"profile {profile['id']}"]
    else:
        per_request = np.maximum(req_rows, 1)
        for size in np.unique(batch[batch > 0]):
            mask = batch == size
            points.append((float(size), float(size / np.median(per_request[mask])),
                           float(np.median(compute[mask])), float(mask.sum())))
        sources = ["request log"] if points else []
    service = fit(points, " and ".join(sources))
    if service is None:
        out["missing"].append(
            "the service time can not be fitted: the log shows runs of one size only"
            + ("" if profile else f", and {name}@{version} has no capacity profile "
               f"(appliance capacity profile {name}@{version})"))
    out["demand"] = {"requests_per_s": per_minute(arrivals),
                     "rows_per_s": per_minute(arrivals, req_rows)}
    if len(rows):
        busy = compute * req_rows / np.maximum(batch, 1)
        minutes = per_minute(arrivals, busy)  # busy seconds per minute / 60: a share
        out["utilisation"] = {"median": round(minutes["p50"], 4),
                              "p95": round(minutes["p95"], 4),
                              "peak": round(minutes["peak"], 4)}
        out["observed"] = {"latency_ms": {"p50": _ms(np.percentile(latency, 50) / 1e6),
                                          "p95": _ms(np.percentile(latency, 95) / 1e6)}}
    out["enough"] = not out["missing"]
    out["memory"] = _tabular_memory(profile, None)
    if not out["enough"] or service is None:
        return out
    out["service_time"] = service.as_dict()
    span = config["capacity.replay_minutes"] * 60.0
    start, stop = simulate.busiest(arrivals, span)
    start = max(start, stop - MAX_REPLAY)
    window_arr = arrivals[start:stop] - arrivals[start]
    window_rows = req_rows[start:stop].astype(np.int64)
    observed_p95 = float(np.percentile(latency[start:stop], 95)) / 1e6
    largest = int(window_rows.max())

    # Runs vary about t: each replayed run takes t times a factor drawn from those the
    # log shows, the same draws for every setting tried, so that the tail of the service
    # time (and a machine slower under load than when profiled) reaches the prediction.
    # The factors come from requests that ran alone (their compute time is the whole
    # run); without enough of those, from every request, about their median.
    alone = (batch > 0) & (batch == req_rows)
    use = alone if alone.sum() >= 30 else batch > 0
    spread = compute[use] / np.array([service(b, b / max(r, 1)) for b, r in
                                      zip(batch[use], req_rows[use], strict=True)])
    if len(spread) and not alone.sum() >= 30:
        spread = spread / np.median(spread)
    spread = np.clip(spread, 0.05, 50.0) if len(spread) else np.ones(1)

    # A request's own work (``d``) is done by the event loop as it arrives, beside the run
    # in progress; a run takes a + c·b.
    rng = np.random.default_rng(0)
    run_factors = rng.choice(spread, size=len(window_arr))
    own = service.d * run_factors if service.d > 0 else None

    def run(max_batch: int, delay_us: int, scale: float = 1.0) -> simulate.Outcome:
        draws = iter(run_factors)
        return simulate.batcher(window_arr / scale, window_rows,
                                lambda b, k: (service.a + service.c * b) * next(draws),
                                max_batch, delay_us / 1e6, per_request=own)

    now = run(current["max_batch_size"], current["max_queue_delay_us"])
    out["replay"] = {"window_start": _iso(arrivals[start]), "requests": int(stop - start),
                     "observed_p95_ms": _ms(observed_p95),
                     "predicted_p95_ms_at_current_settings": _ms(now.p95())}
    sizes = sorted({2 ** k for k in range(0, 17)
                    if largest <= 2 ** k <= max(256, current["max_batch_size"])}
                   | {max(largest, current["max_batch_size"])})
    candidates = []
    for delay in DELAYS_US:
        for size in sizes:
            if size == 1 and delay:
                continue  # a one-row batch is full at once: the delay never applies
            outcome = run(size, delay)
            candidates.append((outcome.p95(), delay, -size))
            if outcome.batch_rows.max() < size:
                # Runs never filled this size: every larger one replays the same, and the
                # largest leaves the most room for bursts.
                candidates.append((outcome.p95(), delay, -sizes[-1]))
                break
    best = min(p for p, _, _ in candidates)
    # Of the settings within TIE of the best: the shortest delay, then the largest batch.
    p95, delay, neg = min((c for c in candidates if c[0] <= best * (1 + TIE) + 1e-6),
                          key=lambda c: (c[1], c[2]))
    chosen = -neg
    out["recommendation"] = {"max_batch_size": chosen, "max_queue_delay_us": delay,
                             "predicted_p95_ms": _ms(p95), "candidates": len(candidates)}
    peak_rate = out["demand"]["requests_per_s"]["peak"]
    window_rate = _rate(window_arr)
    # The most this box sustains: full runs of the recommended size, back to back. A
    # replay of a short window can finish within the SLO above it (the backlog has no
    # time to grow); a sustained rate can not.
    per_run = chosen / float(window_rows.mean())  # requests in a full run
    sustained = per_run / service(chosen, per_run)

    # The rate served within the SLO, at the recommended batch size with its delay or
    # none: a delay that pays at the logged load only adds latency to a trickle.
    def at_delay(d: int) -> Callable[[float], float]:
        return lambda k: run(chosen, d, k).p95()

    hi = max(2 * sustained / window_rate, 1.0)
    scale = max(_scale_within(at_delay(d), slo_s, hi) for d in sorted({0, delay}))
    within = min(scale * window_rate, sustained)
    sentence, headroom = _verdict(peak_rate, within, "requests/s", slo_s * 1e3)
    out["capacity"] = {
        "max_rows_per_s": round(service.throughput(chosen, per_run), 1),
        "max_requests_per_s": round(sustained, 3),
        "requests_per_s_within_slo": round(within, 3), "peak_requests_per_s": peak_rate,
        "headroom": round(headroom, 4), "exceeds": headroom < 0, "verdict": sentence}
    out["memory"] = _tabular_memory(profile, chosen)
    return out


def _tabular_memory(profile: dict[str, Any] | None, batch: int | None) -> dict[str, Any]:
    if not profile:
        return {"reserve_bytes": None,
                "note": "no capacity profile: the memory a run takes is not measured"}
    kind = "gpu" if profile["device"] == "cuda" else "resident"
    pts = [(p["run_rows_mean"], p["memory_bytes"]) for p in profile["points"]
           if p.get("memory_bytes")]
    per_row, base = 0.0, float(max((m for _, m in pts), default=0))
    if len({r for r, _ in pts}) >= 2:
        slope, intercept = np.polyfit([r for r, _ in pts], [m for _, m in pts], 1)
        per_row = max(0.0, float(slope))
        base = max(float(intercept), float(min(m for _, m in pts)) - per_row * min(
            r for r, _ in pts))
    rows = batch or max((p["batch_size"] for p in profile["points"]), default=1)
    reserve = base + per_row * rows
    return {"kind": kind, "weights_bytes": profile.get("model_bytes", 0),
            "base_bytes": int(base), "per_row_bytes": int(per_row), "at_batch_size": rows,
            "reserve_bytes": int(reserve * 1.1),
            "formula": "(base + per row × max_batch_size) × 1.1, measured by profile "
                       f"{profile['id']} ({'GPU memory, NVML' if kind == 'gpu' else 'resident memory'})"}


# ---- language models -------------------------------------------------------------


def _llm(mon: Database, db: Database, config: Config, name: str,
         since: float, until: float, slo_s: float) -> dict[str, Any]:
    rows = mon.execute(
        "SELECT ts - e2e_ms / 1e3, e2e_ms, ttft_ms, completion_tokens, prompt_tokens, version"
        " FROM llm_requests WHERE model = ? AND ts >= ? AND ts < ? AND status < 400"
        " ORDER BY ts", [name, since, until]).fetchall()
    data = np.array([[r[0], r[1], r[2] if r[2] is not None else np.nan, r[3], r[4]]
                     for r in rows], dtype=np.float64).reshape(-1, 5)
    data = data[np.argsort(data[:, 0], kind="stable")]
    arrivals, e2e, ttft, tokens, prompt = (data[:, i] for i in range(5))
    version = _served_version(db, name, int(rows[-1][5]) if rows else 0)
    profile = _profile(db, name, version) if version else None
    out: dict[str, Any] = {"model": name, "kind": "llm", "version": version,
                           "requests": len(rows), "profile_id": profile["id"] if profile
                           else None, "missing": []}
    minimum = config["capacity.min_requests"]
    if len(rows) < minimum:
        out["missing"].append(f"only {len(rows)} answered requests since {_iso(since)}; the "
                              f"report needs {minimum} (capacity.min_requests)")
    step: ServiceTime | None = None
    prefill = 0.0
    if profile is None:
        out["missing"].append(f"{name}@{version} has no capacity profile: a language model's "
                              f"step time is measured by one (appliance capacity profile "
                              f"{name}@{version})")
    else:
        pts = [(p["streams"], p["streams"], p["itl_ms"]["p50"] / 1e3, p["windows"])
               for p in profile["points"] if p["itl_ms"]["p50"] > 0]
        step = fit(pts, f"profile {profile['id']}")
        if step is None:
            out["missing"].append(f"profile {profile['id']} measured one stream count only; "
                                  "profile at least two (--streams 1,4)")
        single = [p for p in profile["points"] if p["streams"] == 1]
        if single:
            prefill = max(0.0, (single[0]["ttft_ms"]["p50"] - single[0]["itl_ms"]["p50"]) / 1e3)
    out["demand"] = {"requests_per_s": per_minute(arrivals),
                     "tokens_per_s": per_minute(arrivals, tokens)}
    concurrent = simulate.overlap_peak(arrivals, arrivals + e2e / 1e3) if len(rows) else 0
    out["peak_concurrent_sequences"] = concurrent
    if len(rows):
        known = ttft[~np.isnan(ttft)]
        out["observed"] = {
            "e2e_ms": {"p50": round(float(np.percentile(e2e, 50)), 3),
                       "p95": round(float(np.percentile(e2e, 95)), 3)},
            "ttft_ms": {"p95": round(float(np.percentile(known, 95)), 3) if len(known)
                        else None}}
    out["memory"] = _llm_memory(profile, max(concurrent, 1))
    out["enough"] = not out["missing"]
    if not out["enough"] or step is None:
        return out
    out["service_time"] = dict(step.as_dict(), prefill_us=round(prefill * 1e6, 1))
    span = config["capacity.replay_minutes"] * 60.0
    start, stop = simulate.busiest(arrivals, span)
    start = max(start, stop - MAX_REPLAY)
    window_arr = arrivals[start:stop] - arrivals[start]
    window_tokens = tokens[start:stop].astype(np.int64)
    limit = config["llm.queue_capacity"]

    def run(scale: float = 1.0) -> simulate.Outcome:
        return simulate.steps(window_arr / scale, window_tokens, step, limit, prefill)

    now = run()
    first = now.first if now.first is not None else now.latency
    out["replay"] = {"window_start": _iso(arrivals[start]), "requests": int(stop - start),
                     "observed_ttft_p95_ms": out["observed"]["ttft_ms"]["p95"],
                     "predicted_ttft_p95_ms": _ms(float(np.percentile(first, 95))),
                     "observed_e2e_p95_ms": round(float(np.percentile(e2e[start:stop], 95)), 3),
                     "predicted_e2e_p95_ms": _ms(now.p95())}

    def ttft_p95(scale: float) -> float:
        o = run(scale)
        return float(np.percentile(o.first if o.first is not None else o.latency, 95))

    window_rate = _rate(window_arr)
    # The most it sustains: ``limit`` sequences in every step, each request its tokens.
    sustained = limit / step(limit) / max(float(window_tokens.mean()), 1.0)
    hi = max(2 * sustained / window_rate, 1.0)
    within = min(_scale_within(ttft_p95, slo_s, hi) * window_rate, sustained)
    peak_rate = out["demand"]["requests_per_s"]["peak"]
    sentence, headroom = _verdict(peak_rate, within, "requests/s", slo_s * 1e3)
    out["capacity"] = {"max_requests_per_s": round(sustained, 3),
                       "requests_per_s_within_slo": round(within, 3),
                       "peak_requests_per_s": peak_rate, "headroom": round(headroom, 4),
                       "exceeds": headroom < 0, "slo_applies_to": "time to first token",
                       "verdict": sentence}
    return out


def kv_cache_bytes(kv: dict[str, int], sequences: int) -> int:
    """2 × layers × KV heads × head size × bytes × context × sequences."""
    return (2 * kv["layers"] * kv["kv_heads"] * kv["head_size"] * kv["bytes"]
            * kv["context_length"] * sequences)


def _llm_memory(profile: dict[str, Any] | None, sequences: int) -> dict[str, Any]:
    if not profile or not profile.get("kv"):
        return {"reserve_bytes": None,
                "note": "no capacity profile: the model's KV cache geometry is read by one"}
    kv = profile["kv"]
    cache = kv_cache_bytes(kv, sequences)
    weights = int(profile.get("model_bytes", 0))
    return {"kind": "gpu" if profile["device"] == "cuda" else "resident",
            "weights_bytes": weights, "kv_cache_bytes": cache, "sequences": sequences,
            "kv": kv, "reserve_bytes": int((weights + cache) * 1.1),
            "formula": "(weights + 2 × layers × KV heads × head size × bytes × context × "
                       "sequences) × 1.1"}


# ---- the report ---------------------------------------------------------------------


def build(mon: Database, db: Database, config: Config, *,
          since: float, until: float | None = None, slo_p95_ms: float | None = None,
          model: str | None = None) -> dict[str, Any]:
    """The report for every model with traffic since ``since`` (or the one named)."""
    until = time.time() if until is None else until
    slo_ms = float(slo_p95_ms if slo_p95_ms is not None else config["capacity.slo_p95_ms"])
    tab = {r[0] for r in mon.execute(
        "SELECT DISTINCT model FROM requests WHERE ts >= ? AND ts < ?", [since, until])}
    llm = {r[0] for r in mon.execute(
        "SELECT DISTINCT model FROM llm_requests WHERE ts >= ? AND ts < ?", [since, until])}
    if model is not None:
        if model not in tab | llm:
            kind = db.execute(
                "SELECT v.signature FROM model_versions v JOIN models m ON m.id = v.model_id"
                " WHERE m.name = ? ORDER BY v.version DESC LIMIT 1", [model]).fetchone()
            if kind is None:
                raise NotFound(f"no model named '{model}'")
            (llm if '"kind": "llm"' in kind[0] or '"kind":"llm"' in kind[0] else tab).add(model)
        tab, llm = tab & {model}, llm & {model}
    models = [_tabular(mon, db, config, n, since, until, slo_ms / 1e3) for n in sorted(tab)]
    models += [_llm(mon, db, config, n, since, until, slo_ms / 1e3) for n in sorted(llm)]
    return {"generated_at": _iso(until), "since": _iso(since), "until": _iso(until),
            "slo_p95_ms": slo_ms, "models": models}
