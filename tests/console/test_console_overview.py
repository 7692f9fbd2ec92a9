"""The overview: services with their heartbeats (serving's included) and open alerts."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from appliance.config import parse_config
from appliance.serving import http


def serving_state(client: FlaskClient) -> dict:
    services = client.get("/api/overview").get_json()["services"]
    return next(s for s in services if s["service"] == "serving")


def test_the_serving_daemons_heartbeat_shows_it_up(app: Flask,
                                                   clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    assert serving_state(viewer)["up"] is False
    home = app.config["APPLIANCE_HOME"]
    serving = http.create_app(parse_config({}), home=home)
    http.write_heartbeat(home, "2024-01-01T00:00:00Z", serving)  # what run()'s heartbeat task writes
    state = serving_state(viewer)
    assert state["up"] is True and state["last_heartbeat"]
    overview = viewer.get("/api/overview").get_json()
    assert overview["alerts"] == 0
    http.write_heartbeat(home, None, serving)  # a clean stop clears the row
    assert serving_state(viewer)["up"] is False
