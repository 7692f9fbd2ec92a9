"""The server-side SVG charts: drawn from the data, escaped, and free of script or style."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from appliance.console import charts

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def test_line_chart_draws_one_polyline_per_series_scaled_to_the_data() -> None:
    svg = parse(charts.line_chart([("p50", [(0, 1.0), (1, 3.0), (2, 2.0)]),
                                   ("p99", [(0, 5.0), (2, 9.0)])], title="latency"))
    lines = svg.findall(f"{SVG}polyline")
    assert len(lines) == 2
    first = [tuple(map(float, p.split(","))) for p in lines[0].get("points", "").split()]
    assert len(first) == 3
    # Higher values sit higher on the page (smaller y); x grows left to right.
    assert first[1][1] < first[2][1] < first[0][1]
    assert first[0][0] < first[1][0] < first[2][0]
    ticks = [t.text for t in svg.findall(f"{SVG}text")]
    assert "9" in ticks and "0" in ticks


def test_histogram_pair_compares_shares() -> None:
    svg = parse(charts.histogram(["a", "b"], [1, 3], compare=[3, 1], title="drift"))
    bars = svg.findall(f"{SVG}rect")
    assert len(bars) == 4
    heights = [float(b.get("height", "0")) for b in bars]
    assert heights[1] > heights[0] and heights[2] > heights[3]
    assert abs(heights[1] - heights[2]) < 1e-6  # 75% in both


def test_text_is_escaped_and_no_script_or_style() -> None:
    hostile = '<script>alert(1)</script>"'
    out = str(charts.line_chart([(hostile, [(0, 1.0), (1, 2.0)])], title=hostile,
                                x_labels=(hostile, hostile)))
    assert "<script" not in out and "style=" not in out
    parse(out)  # still well-formed XML
    assert "no data" in str(charts.line_chart([], title="empty"))
    assert "no data" in str(charts.histogram([], [], title="empty"))


def test_rebin_keeps_the_total() -> None:
    labels, counts = charts.rebin([0.0, 1.0, 2.0, 10.0], [5, 5, 10], bins=5)
    assert len(labels) == len(counts) == 5
    assert abs(sum(counts) - 20) < 1e-9
    assert counts == [10.0, 2.5, 2.5, 2.5, 2.5]
    single_label, single = charts.rebin([3.0, 3.0], [7], bins=5)
    assert single == [7.0] and single_label == ["3"]
