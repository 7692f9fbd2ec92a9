"""The API's own description: ``/api/openapi.json``."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from werkzeug.wrappers import Response

from appliance.console.apidoc import api, openapi
from appliance.console.security import public

bp = Blueprint("meta", __name__)


@bp.get("/api/openapi.json")
@public
@api(returns="the OpenAPI 3 description of this API")
def openapi_json() -> Response:
    """The OpenAPI 3 description of every /api route, generated from the URL map."""
    return jsonify(openapi(current_app))
