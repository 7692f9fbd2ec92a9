"""The audit trail: every state change appends an entry in the change's own transaction.

``standalone_verify.py`` is also the single definition of the audit format: canonical
JSON, the RFC 9162 leaf and tree hashes, and the signed checkpoint note. ``log.py``,
``merkle.py`` and ``checkpoints.py`` use its functions, so the appliance and an auditor's
copy of that one file can never disagree.
"""

from appliance.audit.log import append, canonical_json

__all__ = ["append", "canonical_json"]
