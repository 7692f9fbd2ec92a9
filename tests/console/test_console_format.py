"""Numbers as a person reads them, metrics as tables, long audit details that fold."""

from __future__ import annotations

import re

from appliance.console.web import metric_rows, num


def test_numbers_have_four_significant_digits() -> None:
    assert num(0.9358288770053476) == "0.9358"
    assert num(1.2345678e-07) == "1.235e-07"
    assert num(12345) == "12,345"
    assert num(601.0) == "601"
    assert num(45678.91) == "45,679" and num(1234.567) == "1235"
    assert num(float("inf")) == "∞"
    assert num(float("nan")) == "n/a"
    assert num(None) == "-"
    assert num(True) == "True" and num("x") == "x"


def test_metric_rows_flatten_splits() -> None:
    rows = metric_rows({"test": {"accuracy": 0.93, "f1": 0.8}, "parity_max_abs_diff": 1e-7})
    assert rows == [("test", "accuracy", 0.93), ("test", "f1", 0.8), ("", "parity_max_abs_diff", 1e-7)]
    assert metric_rows(None) == []


def test_model_pages_show_metrics_as_tables(clients) -> None:  # type: ignore[no-untyped-def]
    viewer = clients["viewer"]
    for path in ("/models/churn", "/models/churn/2"):
        page = viewer.get(path).get_data(as_text=True)
        assert 'class="metrics"' in page, path
        assert "{'" not in page and "={" not in page, path  # no Python dicts
        for value in re.findall(r'<td class="num" title="[^"]*">([^<]*)</td>', page):
            digits = re.sub(r"e[-+]\d+$", "", value).replace(",", "").replace(".", "").lstrip("-0")
            assert len(digits) <= 6 or "." not in value, (path, value)


def test_long_audit_details_fold(clients, console_home) -> None:  # type: ignore[no-untyped-def]
    from appliance.audit import append
    from appliance.storage.db import immediate

    with console_home.db() as db, immediate(db):
        append(db, actor="admin", action="model.note", target="model:churn",
               details={"text": "x" * 400})
        append(db, actor="admin", action="model.note", target="model:churn",
               details={"gate": "auc >= 0.8", "hostile": "<script>alert(1)</script>"})
    page = clients["admin"].get("/audit").get_data(as_text=True)
    assert '<td class="details mono small"><details><summary>' in page
    assert "auc &gt;= 0.8" in page and "\\u003e" not in page  # readable, and escaped
    assert "<script>alert(1)" not in page
