"""Profiles and reports as text, for the command line (the console draws its own)."""

from __future__ import annotations

from typing import Any


def figure(value: float) -> str:
    """Four significant digits, and whole with separators from 10,000 up."""
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
            for r in [headers, *rows]]


def profile_rows(profile: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The header and one row per point: what the CLI and the console show."""
    memory = "GPU mem" if profile["device"] == "cuda" else "RSS"
    busy = "GPU %" if profile["device"] == "cuda" else "CPU %"
    rows = []
    if profile["kind"] == "llm":
        headers = ["streams", "prompt", "answer", "req/s", "tok/s", "ttft p50 ms",
                   "ttft p95 ms", "itl p50 ms", "itl p95 ms", "queue p95 ms", "e2e p95 ms",
                   memory, busy, "stable"]
        for p in profile["points"]:
            rows.append([str(p["streams"]), str(p["prompt_tokens"]), str(p["answer_tokens"]),
                         f"{p['requests_per_s']:,.2f}", f"{p['tokens_per_s']:,.1f}",
                         f"{p['ttft_ms']['p50']:.2f}", f"{p['ttft_ms']['p95']:.2f}",
                         f"{p['itl_ms']['p50']:.3f}", f"{p['itl_ms']['p95']:.3f}",
                         f"{p['queue_ms']['p95']:.2f}", f"{p['e2e_ms']['p95']:.2f}",
                         mib(p["memory_bytes"]), _pct(p["activity_percent"]),
                         "yes" if p["stable"] else "no"])
        return headers, rows
    headers = ["batch", "conc", "req/s", "rows/s", "p50 ms", "p95 ms", "p99 ms", "queue p95",
               "compute p95", "run rows", memory, busy, "stable"]
    for p in profile["points"]:
        rows.append([str(p["batch_size"]), str(p["concurrency"]), f"{p['requests_per_s']:,.1f}",
                     f"{p['rows_per_s']:,.1f}", _ms(p["latency_us"]["p50"]),
                     _ms(p["latency_us"]["p95"]), _ms(p["latency_us"]["p99"]),
                     _ms(p["queue_us"]["p95"]), _ms(p["compute_us"]["p95"]),
                     f"{p['run_rows_mean']:g}", mib(p["memory_bytes"]),
                     _pct(p["activity_percent"]), "yes" if p["stable"] else "no"])
    return headers, rows


def _ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def profile_text(profile: dict[str, Any]) -> str:
    where = f"{profile['device']} ({profile['provider']})"
    lines = [f"capacity profile {profile['id']} of {profile['model']}@{profile['version']} "
             f"({profile['kind']}) on {where}, {profile['created_at'][:19]}Z, "
             f"{profile['duration_s']} s"]
    lines += table(*profile_rows(profile))
    for note in profile.get("skipped", []):
        lines.append(f"skipped: {note}")
    if any(not p["stable"] for p in profile["points"]):
        lines.append("a point marked 'no' did not settle within capacity.stability in "
                     "capacity.max_windows windows: its figures are those of its last windows")
    return "\n".join(lines)


def report_text(report: dict[str, Any]) -> str:
    lines = [f"capacity report, {report['since']} to {report['until']}, SLO p95 "
             f"{report['slo_p95_ms']:g} ms"]
    if not report["models"]:
        lines.append("no traffic in this period")
    for m in report["models"]:
        lines.append("")
        lines.append(f"{m['model']}@{m['version']} ({m['kind']}): {m['requests']:,} answered "
                     "requests")
        demand = m.get("demand", {}).get("requests_per_s")
        if demand and m["requests"]:
            lines.append(f"  demand     requests/s p50 {figure(demand['p50'])}, p95 "
                         f"{figure(demand['p95'])}, peak {figure(demand['peak'])} (minute "
                         f"{demand['peak_minute']})")
        if "utilisation" in m:
            u = m["utilisation"]
            lines.append(f"  busy       median {u['median']:.0%} of each minute, p95 "
                         f"{u['p95']:.0%}, peak {u['peak']:.0%}")
        if m["kind"] == "llm" and m["requests"]:
            lines.append(f"  sequences  at most {m['peak_concurrent_sequences']} at once")
        if not m["enough"]:
            for missing in m["missing"]:
                lines.append(f"  not enough data: {missing}")
            continue
        s = m["service_time"]
        unit = "sequence" if m["kind"] == "llm" else "row"
        per_request = f" + {s['d_us']:g} us per request" if s.get("d_us") else ""
        lines.append(f"  service    t = {s['a_us']:g} us + {s['c_us']:g} us per {unit}{per_request} "
                     f"(fitted on {s['points']} points from the {s['source']}, r² {s['r2']:.2f})")
        r = m["replay"]
        if m["kind"] == "llm":
            lines.append(f"  replay     {r['requests']:,} requests from {r['window_start']}: "
                         f"time to first token p95 {r['observed_ttft_p95_ms']} ms logged, "
                         f"{r['predicted_ttft_p95_ms']} ms predicted")
        else:
            now = m["settings_now"]
            lines.append(f"  replay     {r['requests']:,} requests from {r['window_start']} at "
                         f"max_batch_size {now['max_batch_size']}, max_queue_delay_us "
                         f"{now['max_queue_delay_us']}: p95 {r['observed_p95_ms']} ms logged, "
                         f"{r['predicted_p95_ms_at_current_settings']} ms predicted")
            rec = m["recommendation"]
            lines.append(f"  recommend  serving.max_batch_size = {rec['max_batch_size']}, "
                         f"serving.max_queue_delay_us = {rec['max_queue_delay_us']}: predicted "
                         f"p95 {rec['predicted_p95_ms']} ms at the busiest traffic")
        lines.append(f"  capacity   {m['capacity']['verdict']}")
        mem = m["memory"]
        if mem.get("reserve_bytes") is not None:
            what = "GPU memory" if mem["kind"] == "gpu" else "memory (no GPU: resident)"
            lines.append(f"  reserve    {mib(mem['reserve_bytes'])} of {what}: {mem['formula']}")
        elif mem.get("note"):
            lines.append(f"  reserve    unknown: {mem['note']}")
    return "\n".join(lines)
