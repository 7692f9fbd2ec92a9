"""The registry as the serving engine's model source.

A model is served when it has a ``production`` alias. Promotion drives the
rest with the registry's own audited primitives: a ``canary`` alias takes the
share of traffic given by the canary version's ``canary_weight`` tag (0..1,
default 0, so a canary alias alone routes nothing), and a ``shadow`` alias
gets a copy of every request. ONNX bytes come from the blob store, verified
against their digest and, for a version signed at promotion, its Ed25519
signature, before a session is built from them.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

from appliance.errors import BadInput, OperationFailed
from appliance.llm.folder import is_llm, materialize
from appliance.registry import alias_fingerprint, list_aliases, resolve
from appliance.registry.signing import verify_model
from appliance.serving.source import Resolved, Route
from appliance.storage.db import Database
from appliance.storage.home import Home

PRODUCTION, CANARY, SHADOW = "production", "canary", "shadow"
CANARY_WEIGHT_TAG = "canary_weight"


class RegistrySource:
    def __init__(self, home: Home) -> None:
        self._home = home
        self._db: Database | None = None
        self._lock = threading.Lock()  # one connection, used by the poller and loaders

    def _conn(self) -> Database:
        if self._db is None:
            self._db = self._home.db()
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def fingerprint(self) -> Hashable:
        with self._lock:
            db = self._conn()
            weights = tuple(tuple(r) for r in db.execute(
                "SELECT version_id, value FROM model_version_tags WHERE key = ?"
                " ORDER BY version_id", [CANARY_WEIGHT_TAG]).fetchall())
            return (alias_fingerprint(db), weights)

    def list_served(self) -> dict[str, Route]:
        with self._lock:
            db = self._conn()
            by_model: dict[str, dict[str, tuple[int, int]]] = {}
            for row in list_aliases(db):
                by_model.setdefault(row["name"], {})[row["alias"]] = (
                    int(row["version"]), int(row["version_id"]))
            weights = {int(vid): value for vid, value in db.execute(
                "SELECT version_id, value FROM model_version_tags WHERE key = ?",
                [CANARY_WEIGHT_TAG]).fetchall()}
        routes: dict[str, Route] = {}
        for name, aliases in by_model.items():
            if PRODUCTION not in aliases:
                continue
            canary = aliases.get(CANARY)
            weight = 0.0
            if canary is not None:
                text = weights.get(canary[1], "0")
                try:
                    weight = min(1.0, max(0.0, float(text)))
                except ValueError:
                    weight = 0.0
            try:
                routes[name] = Route(
                    name=name,
                    primary=aliases[PRODUCTION][0],
                    canary=canary[0] if canary else None,
                    canary_weight=weight,
                    shadow=aliases[SHADOW][0] if SHADOW in aliases else None,
                )
            except BadInput:
                routes[name] = Route(name=name, primary=aliases[PRODUCTION][0])
        return routes

    def resolve(self, name: str, version: int | None) -> Resolved:
        ref = f"{name}@{version}" if version is not None else f"{name}@{PRODUCTION}"
        with self._lock:
            mv = resolve(self._conn(), ref)
        data = self._home.blobs.read_bytes(mv.onnx_digest, verify=True)
        with self._lock:
            # A promoted (signed) version loads only when its bytes verify.
            signed = verify_model(self._conn(), self._home.keys_dir, mv, data)
        if is_llm(mv.signature):
            # A language model is its folder's manifest: signed as a whole, each file
            # checked against it as the folder is put back. Only a promoted one loads.
            if not signed:
                raise OperationFailed(f"{mv.ref} is a language model that never passed "
                                      "promotion (it has no model signature); not loaded")
            folder = materialize(self._home.blobs, data, self._home.llm_dir / mv.onnx_digest)
            return Resolved(name=mv.name, version=mv.version, model=folder,
                            signature=mv.signature, signed=signed)
        return Resolved(name=mv.name, version=mv.version, model=data, signature=mv.signature,
                        signed=signed)
