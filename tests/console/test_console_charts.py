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


def _points(line: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in line.get("points", "").split()]


def test_counts_get_their_own_axis_and_do_not_flatten_rates() -> None:
    accuracy = [(0, 0.90), (1, 0.70), (2, 0.95)]
    rows = [(0, 200.0), (1, 400.0), (2, 601.0)]
    svg = parse(charts.line_chart([("accuracy", accuracy)], right=[("count", rows)],
                                  right_label="labelled rows", title="performance"))
    acc, count = svg.findall(f"{SVG}polyline")
    ys = [y for _, y in _points(acc)]
    plot_h = charts.HEIGHT - charts.PAD_TOP - charts.PAD_BOTTOM
    assert max(ys) - min(ys) > plot_h / 8, "accuracy lies flat"  # on one axis with 601: < 1 px
    ticks = [t.text for t in svg.findall(f"{SVG}text")]
    assert "601" in ticks and "0.95" in ticks  # each axis labelled with its own scale
    assert count.get("points")


def test_legend_labels_never_overlap() -> None:
    names = [f"feature_with_a_long_name_{i}" for i in range(9)]
    svg = parse(charts.line_chart([(n, [(0, i), (1, i + 1)]) for i, n in enumerate(names)],
                                  title="drift"))
    labels = [t for t in svg.findall(f"{SVG}text") if t.get("class", "").startswith("legend")]
    assert len(labels) == 9
    boxes = [(float(t.get("x")), float(t.get("y")), len(t.text or "") * charts.CHAR_W)
             for t in labels]
    for i, (x, y, w) in enumerate(boxes):
        assert x + w <= charts.WIDTH, (x, w)
        for x2, y2, w2 in boxes[i + 1:]:
            assert y != y2 or x + w <= x2 or x2 + w2 <= x, "legend labels overlap"


def test_every_point_shows_its_value_on_hover_and_empty_charts_say_why() -> None:
    svg = parse(charts.line_chart([("p99", [(0, 12.5), (60, 80.25)])], title="latency",
                                  x_format=lambda x: f"t+{x:.0f}s"))
    titles = [c.find(f"{SVG}title").text for c in svg.findall(f"{SVG}circle")]
    assert titles == ["p99: 12.5 at t+0s", "p99: 80.2 at t+60s"] or \
        titles == ["p99: 12.5 at t+0s", "p99: 80.3 at t+60s"], titles
    empty = str(charts.line_chart([], title="requests per minute"))
    assert "no data yet: requests per minute" in empty


def test_xy_chart_joins_points_in_the_order_given_on_numeric_axes() -> None:
    P = charts.XYPoint
    svg = parse(charts.xy_chart(
        [("batch 1", [P(100, 2.0, "concurrency 1"), P(300, 3.0, "concurrency 2"),
                      P(250, 9.0, "concurrency 4", marked=True)]),
         ("batch 8", [P(800, 4.0)])],
        title="throughput", x_label="throughput", x_unit="rows/s", y_label="latency p95",
        y_unit="ms", marked_label="not stable"))
    first, = svg.findall(f"{SVG}polyline")  # a one-point series is a dot alone
    xs = [x for x, _ in _points(first)]
    assert xs[0] < xs[2] < xs[1], "points stay in the order given, not sorted by x"
    texts = [t.text for t in svg.findall(f"{SVG}text")]
    assert "throughput (rows/s)" in texts and "latency p95 (ms)" in texts
    assert "800" in texts and "0" in texts  # round ticks from 0 past the largest x
    dots = svg.findall(f"{SVG}circle")
    hovers = [c.find(f"{SVG}title").text for c in dots if c.find(f"{SVG}title") is not None]
    assert "batch 1, concurrency 2: 300 rows/s, latency p95 3 ms" in hovers
    assert "batch 1, concurrency 4: 250 rows/s, latency p95 9 ms (not stable)" in hovers
    assert sum("marked" in c.get("class", "") for c in dots) == 2  # the point and its legend
    assert charts.ticks(0, 7.3) == [0, 2, 4, 6, 8]


def test_xy_chart_is_escaped_and_says_when_it_has_nothing() -> None:
    hostile = '<script>alert(1)</script>"'
    out = str(charts.xy_chart([(hostile, [charts.XYPoint(1, 1, hostile, True)])],
                              title=hostile, x_label=hostile, x_unit=hostile,
                              y_label=hostile, y_unit=hostile, marked_label=hostile))
    assert "<script" not in out and "style=" not in out
    parse(out)
    empty = str(charts.xy_chart([("batch 1", [])], title="throughput", x_label="x",
                                x_unit="u", y_label="y", y_unit="u"))
    assert "no data yet: throughput" in empty


def test_xy_legend_labels_never_overlap_and_stay_inside() -> None:
    names = [f"prompt {16 * i}, answer {32 * i} tokens" for i in range(1, 11)]
    svg = parse(charts.xy_chart([(n, [charts.XYPoint(i, i + 1)]) for i, n in enumerate(names)],
                                title="t", x_label="x", x_unit="u", y_label="y", y_unit="u"))
    labels = [t for t in svg.findall(f"{SVG}text") if t.get("class", "").startswith("legend")]
    assert len(labels) == 10
    boxes = [(float(t.get("x")), float(t.get("y")), len(t.text or "") * charts.CHAR_W)
             for t in labels]
    for i, (x, y, w) in enumerate(boxes):
        assert x + w <= charts.XY_WIDTH, (x, w)
        for x2, y2, w2 in boxes[i + 1:]:
            assert y != y2 or x + w <= x2 or x2 + w2 <= x, "legend labels overlap"
    # the plot starts below the legend's last line
    top = min(float(line.get("y1")) for line in svg.findall(f"{SVG}line")
              if line.get("class") == "axis")
    assert top > max(y for _, y, _ in boxes)
