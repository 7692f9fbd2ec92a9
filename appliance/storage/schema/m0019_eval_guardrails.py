"""The guardrails' verdict on each case of an evaluation run (``appliance.evals.guard``), as
JSON: whether the case is an attack, the input and output checks' actions and what
triggered, and, for an attack, whether it passed."""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "appliance"


def _guardrail(db: Database) -> None:
    db.execute("ALTER TABLE eval_results ADD COLUMN guardrail TEXT")


MIGRATIONS = [Migration("evals.0003_guardrail_verdicts", _guardrail)]
