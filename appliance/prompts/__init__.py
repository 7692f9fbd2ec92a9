"""The prompt registry: chat templates with ``{{variable}}`` placeholders, the model they
are for and its generation parameters, as immutable content-addressed versions with
audited aliases; ``production`` moves only through ``promote`` and ``rollback``.

``spec`` reads and checks a prompt file, ``registry`` stores versions and aliases,
``promotion`` holds the gate list (empty for now) and the governed moves, ``serving``
is what the serving daemon reads prompts through.
"""

from appliance.prompts.promotion import (
    GATES,
    GateResult,
    PromptPromotion,
    PromptPromotionRefused,
    promote,
    rollback,
)
from appliance.prompts.registry import (
    PRODUCTION,
    PromptAliasMove,
    PromptVersion,
    add_prompt,
    alias_at,
    alias_history,
    diff,
    fingerprint,
    list_prompts,
    list_versions,
    read_file,
    resolve,
    set_alias,
)
from appliance.prompts.spec import PromptSpec, Variable, parse_prompt

__all__ = [
    "GATES",
    "PRODUCTION",
    "GateResult",
    "PromptAliasMove",
    "PromptPromotion",
    "PromptPromotionRefused",
    "PromptSpec",
    "PromptVersion",
    "Variable",
    "add_prompt",
    "alias_at",
    "alias_history",
    "diff",
    "fingerprint",
    "list_prompts",
    "list_versions",
    "parse_prompt",
    "promote",
    "read_file",
    "resolve",
    "rollback",
    "set_alias",
]
