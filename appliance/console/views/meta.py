"""The API's own description (``/api/openapi.json``) and the box's state for Prometheus
(``/metrics``)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from werkzeug.wrappers import Response

from appliance.console import web
from appliance.console.apidoc import api, openapi
from appliance.console.security import public, requires
from appliance.monitoring import gauges

bp = Blueprint("meta", __name__)


@bp.get("/api/openapi.json")
@public
@api(returns="the OpenAPI 3 description of this API")
def openapi_json() -> Response:
    """The OpenAPI 3 description of every /api route, generated from the URL map."""
    return jsonify(openapi(current_app))


@bp.get("/metrics")
@requires("monitoring.read")
def metrics() -> Response:
    """Prometheus text: jobs by state and kind, live alerts, served models, the audit log's
    length and the age of its last checkpoint. A scraper sends an API token with the
    'read' scope (``authorization: Bearer ...``)."""
    return Response(gauges.render(web.get_db()),
                    content_type="text/plain; version=0.0.4; charset=utf-8")
