"""Where the serving engine gets its models: a small interface over the registry.

The engine asks three things of a model source:

- ``fingerprint()``: a cheap value that changes whenever any alias moves, polled
  every ``serving.poll_interval_s``; only when it changes is anything else read;
- ``list_served()``: for each model with a ``production`` alias, its ``Route``;
- ``resolve(name, version)``: the ONNX bytes (or file) of one version, or of the
  ``production`` version when ``version`` is None; ``NotFound`` when there is none;
  ``signed`` says whether the version passed promotion (the version path serves no other).

A ``Route`` is the data structure promotion drives: the production version, an
optional canary that takes a weighted, per-request-id stable share of traffic,
and an optional shadow that gets a copy of every request, whose outputs are
recorded and never returned.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.errors import BadInput


@dataclass(frozen=True)
class Route:
    name: str
    primary: int
    canary: int | None = None
    canary_weight: float = 0.0  # share of requests, 0..1, sent to the canary
    shadow: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_weight <= 1.0:
            raise BadInput(f"model '{self.name}': canary weight must be between 0 and 1")
        if self.canary_weight > 0 and self.canary is None:
            raise BadInput(f"model '{self.name}': a canary weight needs a canary version")

    @property
    def versions(self) -> tuple[int, ...]:
        found = [self.primary]
        for v in (self.canary, self.shadow):
            if v is not None and v not in found:
                found.append(v)
        return tuple(found)

    def pick(self, request_id: str | None, fallback: float) -> tuple[int, str]:
        """The version that answers a request, and why: 'primary' or 'canary'.

        The same request id always lands on the same side; a request without an
        id uses ``fallback`` (a random number in [0, 1)).
        """
        if self.canary is None or self.canary_weight <= 0.0:
            return self.primary, "primary"
        if request_id is not None:
            point = zlib.crc32(f"{self.name}/{request_id}".encode()) / 0x1_0000_0000
        else:
            point = fallback
        if point < self.canary_weight:
            return self.canary, "canary"
        return self.primary, "primary"


@dataclass(frozen=True)
class Resolved:
    name: str
    version: int
    model: bytes | Path  # ONNX bytes, or a file onnxruntime can open
    signature: Mapping[str, Any] = field(default_factory=dict)  # as the registry records it
    # Whether the version passed its promotion gates (its signature verified): only such a
    # version is served to a request that names it by number.
    signed: bool = False


class ModelSource(Protocol):
    def fingerprint(self) -> Hashable: ...

    def list_served(self) -> Mapping[str, Route]: ...

    def resolve(self, name: str, version: int | None) -> Resolved: ...
