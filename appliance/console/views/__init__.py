"""One blueprint per resource; each serves its pages and its ``/api/...`` routes."""

from appliance.console.views import (
    alerts,
    audit,
    capacity,
    datasets,
    evals,
    guardrails,
    llm,
    meta,
    models,
    monitoring,
    overview,
    promotion,
    prompts,
    runs,
    session,
    settings,
    training,
    users,
)

BLUEPRINTS = [
    session.bp, overview.bp, models.bp, promotion.bp, training.bp, runs.bp, datasets.bp, monitoring.bp,
    llm.bp, guardrails.bp, prompts.bp, evals.bp, capacity.bp, alerts.bp, audit.bp, users.bp, settings.bp, meta.bp,
]
