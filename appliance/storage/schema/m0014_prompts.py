"""The prompt version that answered a language-model request (``llm_requests.prompt_ref``).

``NAME@VERSION`` of the prompt named by the request (``"model": "prompts:/NAME@ALIAS"``),
NULL for a request that named a model. (``prompt`` already holds the prompt's text when
``llm.log_text`` is on.)
"""

from __future__ import annotations

from appliance.storage.db import Database
from appliance.storage.migrations import Migration

DATABASE = "monitoring"


def _prompt_ref(db: Database) -> None:
    db.execute("ALTER TABLE llm_requests ADD COLUMN prompt_ref TEXT")
    db.execute("CREATE INDEX llm_requests_prompt_ts ON llm_requests (prompt_ref, ts)"
               " WHERE prompt_ref IS NOT NULL")


MIGRATIONS = [Migration("monitoring.0014_prompt_ref", _prompt_ref)]
