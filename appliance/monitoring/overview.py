"""What the console shows for one model: traffic per minute, stored checks, live alerts and
labelled performance per version; one JSON-ready dict, read-only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.monitoring.traffic import Window, traffic

if TYPE_CHECKING:
    from appliance.storage.home import Home


def output_names(mv: Any) -> tuple[str, str]:
    from appliance.registry import output_name

    return (output_name(mv.signature, "probabilities"), output_name(mv.signature, "prediction"))


def overview(home: Home, name: str, *, window: Window | None = None,
             history: int = 200) -> dict[str, Any]:
    # numpy, the drift statistics, the alerts and the registry (and through them the
    # audit log's cryptography): imported here, as the package imports this module
    from appliance.monitoring.alerts import list_alerts
    from appliance.monitoring.check import check_history
    from appliance.monitoring.feedback import labelled, performance
    from appliance.registry import resolve

    window = window or Window.last(60)
    with home.db() as db:
        mv = resolve(db, name)
        alerts = [a.as_dict() for a in list_alerts(db, model=mv.name)]
        versions = {}
        mon = home.monitoring_db()
        try:
            per_minute = traffic(mon, mv.name, window)
            checks = check_history(mon, mv.name, limit=history)
            for version, data in sorted(labelled(mon, mv.name, window, output_names(mv)).items()):
                this = resolve(db, f"{mv.name}@{version}")
                metrics, _ = performance(this, data)
                versions[str(version)] = {"labelled_rows": len(data.labels), "metrics": metrics,
                                          "test_metrics": this.metrics.get("test", {})}
        finally:
            mon.close()
    return {"model": mv.name, "version": mv.version, "window": window.as_dict(),
            "traffic": per_minute, "checks": checks, "alerts": alerts,
            "performance": versions}
