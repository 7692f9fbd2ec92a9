"""The model registry: models, immutable versions, aliases with their full history, tags.

References are ``NAME``, ``NAME@VERSION`` or ``NAME@ALIAS`` (``resolve``).
Alias moves are recorded in ``alias_history`` together with their audit entry;
``alias_fingerprint`` is the cheap value a poller compares to notice a move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance import lazy_exports
from appliance.registry.aliases import (
    AliasMove,
    alias_at,
    alias_fingerprint,
    alias_history,
    list_aliases,
    move_alias_in_transaction,
    remove_alias,
    set_alias,
)
from appliance.registry.refs import Ref, check_alias, check_name, parse_ref
from appliance.registry.versions import (
    DEFAULT_ALIAS,
    ModelVersion,
    get_version_by_id,
    insert_version,
    list_models,
    list_versions,
    model_summary,
    output_name,
    resolve,
    set_description,
    set_tag,
)

if TYPE_CHECKING:
    from appliance.registry.importing import import_folder, import_model

#: imported when first used: checking a model file loads onnx, numpy and the model folders
_LAZY = {"import_folder": "appliance.registry.importing",
         "import_model": "appliance.registry.importing"}


__getattr__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "DEFAULT_ALIAS",
    "AliasMove",
    "ModelVersion",
    "Ref",
    "alias_at",
    "alias_fingerprint",
    "alias_history",
    "check_alias",
    "check_name",
    "get_version_by_id",
    "import_folder",
    "import_model",
    "insert_version",
    "list_aliases",
    "list_models",
    "list_versions",
    "model_summary",
    "move_alias_in_transaction",
    "output_name",
    "parse_ref",
    "remove_alias",
    "resolve",
    "set_alias",
    "set_description",
    "set_tag",
]
