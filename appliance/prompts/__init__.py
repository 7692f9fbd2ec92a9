"""The prompt registry: chat templates with ``{{variable}}`` placeholders, the model they
are for and its generation parameters, as immutable content-addressed versions with
audited aliases; ``production`` moves only through ``promote`` and ``rollback``.

``spec`` reads and checks a prompt file, ``registry`` stores versions and aliases,
``promotion`` holds the gate list (empty for now) and the governed moves, ``serving``
is what the serving daemon reads prompts through.

Each name is imported from its module when first used, so that reading prompts does not
load the promotion rules and access control.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance import lazy_exports

if TYPE_CHECKING:
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

#: name -> the module of this package that defines it, imported on first use
_LAZY = {
    "GATES": "promotion", "GateResult": "promotion", "PromptPromotion": "promotion",
    "PromptPromotionRefused": "promotion", "promote": "promotion", "rollback": "promotion",
    "PRODUCTION": "registry", "PromptAliasMove": "registry", "PromptVersion": "registry",
    "add_prompt": "registry", "alias_at": "registry", "alias_history": "registry",
    "diff": "registry", "fingerprint": "registry", "list_prompts": "registry",
    "list_versions": "registry", "read_file": "registry", "resolve": "registry",
    "set_alias": "registry",
    "PromptSpec": "spec", "Variable": "spec", "parse_prompt": "spec",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())


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
