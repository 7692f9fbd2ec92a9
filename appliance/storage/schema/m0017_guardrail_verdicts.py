"""The guardrails' verdicts on a language-model request (``appliance.guardrails``), as
JSON: per stage (input, output) the action taken, the checks that triggered and how long
the checks took; a triggered check's score and detail too."""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "monitoring"


def _guardrail(db: Database) -> None:
    db.execute("ALTER TABLE llm_requests ADD COLUMN guardrail TEXT")


MIGRATIONS = [Migration("monitoring.0017_guardrail_verdicts", _guardrail)]
