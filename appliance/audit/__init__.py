"""The audit trail: every state change appends an entry in the change's own transaction."""

from appliance.audit.log import append, canonical_json

__all__ = ["append", "canonical_json"]
