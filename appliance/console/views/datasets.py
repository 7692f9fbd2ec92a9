"""Datasets: versions, schema and the reference profile, a small histogram per column."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template
from markupsafe import Markup
from werkzeug.wrappers import Response

from appliance import datasets
from appliance.console import charts, web
from appliance.console.apidoc import api
from appliance.console.security import requires

bp = Blueprint("datasets", __name__)
READ = "datasets.read"


def column_chart(name: str, column: dict[str, Any]) -> Markup:
    if column.get("type") == "categorical":
        cats = column.get("categories") or {}
        labels = list(cats) + (["other"] if column.get("other") else [])
        counts = list(cats.values()) + ([column["other"]] if column.get("other") else [])
        return charts.histogram(labels, counts, title=f"{name}: category counts")
    bins = column.get("bins")
    if not bins:
        return charts.histogram([], [], title=f"{name}: no values")
    labels, counts = charts.rebin(bins["edges"], bins["counts"])
    return charts.histogram(labels, counts, title=f"{name}: distribution")


def version_detail(name: str, version: int) -> dict[str, Any]:
    dv = datasets.get_dataset_version(web.get_db(), f"{name}@{version}")
    profile = datasets.load_profile(web.home().blobs, dv)
    return {"version": dv.as_dict(), "profile": profile}


@bp.get("/datasets")
@requires(READ)
def index() -> str:
    return render_template("datasets.html", datasets=datasets.list_datasets(web.get_db()))


@bp.get("/datasets/<name>")
@requires(READ)
def dataset_page(name: str) -> str:
    versions = datasets.list_versions(web.get_db(), name)
    return render_template("dataset.html", name=name, versions=versions)


@bp.get("/datasets/<name>/<int:version>")
@requires(READ)
def version_page(name: str, version: int) -> str:
    detail = version_detail(name, version)
    charts_by_column = {col: column_chart(col, info)
                        for col, info in detail["profile"].get("columns", {}).items()}
    return render_template("dataset_version.html", charts=charts_by_column, **detail)


@bp.get("/api/datasets")
@requires(READ)
@api(returns="{datasets: [{name, versions, latest, ...}]}")
def api_datasets() -> Response:
    """Every dataset with its version count and latest version."""
    return jsonify({"datasets": datasets.list_datasets(web.get_db())})


@bp.get("/api/datasets/<name>")
@requires(READ)
@api(returns="{versions: [...]}")
def api_dataset(name: str) -> Response:
    """The versions of one dataset, oldest first."""
    return jsonify({"versions": [v.as_dict() for v in datasets.list_versions(web.get_db(), name)]})


@bp.get("/api/datasets/<name>/versions/<int:version>")
@requires(READ)
@api(returns="{version, profile}")
def api_dataset_version(name: str, version: int) -> Response:
    """One dataset version with its schema and reference profile."""
    return jsonify(version_detail(name, version))
