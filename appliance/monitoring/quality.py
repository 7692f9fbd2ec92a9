"""Data quality of served inputs, per feature and window, against the training data's profile.

Four checks, each a share of the window's kept values so that windows of
any size compare; a share weighs each row by its request's weight (1 / its chance of
being kept, see ``serving.log_rows_per_second``), so it estimates the share of all
traffic, while counts are of kept rows:

- missing values, judged by how far the share rose above the training data's;
- type or schema violations: a feature absent from a kept request, a value
  of the wrong kind (text where a number belongs), and requests the server
  refused as malformed (4xx), which never reach the sample;
- numeric values outside the training range (the profile's min and max);
- categories never seen in training (only where the profile lists every
  category; a profile that folded a long tail into "other" can not tell).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.monitoring.traffic import Samples, as_float


@dataclass(frozen=True)
class QualityLimits:
    max_missing_increase: float = 0.1
    max_out_of_range_share: float = 0.05
    max_unseen_share: float = 0.05

    @classmethod
    def from_config(cls, config: Any) -> QualityLimits:
        return cls(config["monitoring.max_missing_increase"],
                   config["monitoring.max_out_of_range_share"],
                   config["monitoring.max_unseen_share"])


@dataclass
class FeatureQuality:
    name: str
    kind: str  # numeric or categorical
    rows: int
    missing: int
    missing_share: float
    reference_missing_share: float
    type_violations: int
    out_of_range: int = 0
    out_of_range_share: float = 0.0
    unseen: int = 0
    unseen_share: float = 0.0
    unseen_examples: list[str] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class QualityReport:
    rows: int
    rejected_requests: int  # 4xx answers in the window: malformed or wrongly typed requests
    features: list[FeatureQuality]

    @property
    def breaches(self) -> list[str]:
        found = [f"{f.name}: {b}" for f in self.features for b in f.breaches]
        return found

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "rejected_requests": self.rejected_requests,
                "breaches": self.breaches, "features": [f.as_dict() for f in self.features]}


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def feature_kinds(signature: Mapping[str, Any]) -> dict[str, str]:
    """Feature name -> numeric or categorical, from the version's signature."""
    described = signature.get("features")
    if described:
        return {f["name"]: f["kind"] for f in described}
    return {i["name"]: ("categorical" if i["datatype"] == "BYTES" else "numeric")
            for i in signature.get("inputs", [])}


def assess(samples: Samples, kinds: Mapping[str, str], profile: Mapping[str, Any],
           limits: QualityLimits, rejected_requests: int = 0) -> QualityReport:
    """Judge every feature of the window; ``breaches`` say what crossed a limit."""
    n = samples.rows
    w = samples.weights if len(samples.weights) == n else np.ones(n)
    columns = profile.get("columns", {})
    out: list[FeatureQuality] = []
    for name, kind in kinds.items():
        ref = columns.get(name, {})
        values = samples.inputs.get(name)
        if values is None:  # the feature never arrived: every row violates the schema
            fq = FeatureQuality(name, kind, n, n, _share(n, n),
                                float(ref.get("missing_share", 0.0)), n)
            if n:
                fq.breaches.append("missing from every kept request")
            out.append(fq)
            continue
        if kind == "numeric":
            fq = _numeric(name, values, ref, w)
        else:
            fq = _categorical(name, values, ref, w)
        if fq.missing_share - fq.reference_missing_share > limits.max_missing_increase:
            fq.breaches.append(f"missing share {fq.missing_share:.3f} (training "
                               f"{fq.reference_missing_share:.3f})")
        if fq.type_violations:
            fq.breaches.append(f"{fq.type_violations} value(s) of the wrong type")
        if fq.out_of_range_share > limits.max_out_of_range_share:
            fq.breaches.append(f"{fq.out_of_range_share:.3f} of values outside the training "
                               "range")
        if fq.unseen_share > limits.max_unseen_share:
            fq.breaches.append(f"{fq.unseen_share:.3f} of values are categories never seen in "
                               "training")
        out.append(fq)
    return QualityReport(n, rejected_requests, out)


def _numeric(name: str, values: list[Any], ref: Mapping[str, Any],
             w: np.ndarray) -> FeatureQuality:
    arr, bad = as_float(values)
    n = len(arr)
    is_bad = np.array([v is not None and not isinstance(v, (bool, int, float)) for v in values],
                      dtype=bool)
    nan = np.isnan(arr)
    is_missing = nan & ~is_bad
    missing = int(is_missing.sum())
    fq = FeatureQuality(name, "numeric", n, missing, _share(w[is_missing].sum(), w.sum()),
                        float(ref.get("missing_share", 0.0)), bad)
    present = arr[~nan]
    if "min" in ref and "max" in ref and len(present):
        out = (present < float(ref["min"])) | (present > float(ref["max"]))
        fq.out_of_range = int(out.sum())
        wp = w[~nan]
        fq.out_of_range_share = _share(wp[out].sum(), wp.sum())
    return fq


def _categorical(name: str, values: list[Any], ref: Mapping[str, Any],
                 w: np.ndarray) -> FeatureQuality:
    n = len(values)
    is_missing = np.array([v is None or v == "" for v in values], dtype=bool)
    is_bad = np.array([v is not None and not isinstance(v, str) for v in values], dtype=bool)
    fq = FeatureQuality(name, "categorical", n, int(is_missing.sum()),
                        _share(w[is_missing].sum(), w.sum()),
                        float(ref.get("missing_share", 0.0)), int(is_bad.sum()))
    known = ref.get("categories")
    if known is not None and int(ref.get("other", 0)) == 0:
        unseen: dict[str, int] = {}
        unseen_weight = 0.0
        for v, weight in zip(values, w.tolist(), strict=True):
            if isinstance(v, str) and v and v not in known:
                unseen[v] = unseen.get(v, 0) + 1
                unseen_weight += weight
        fq.unseen = sum(unseen.values())
        fq.unseen_share = _share(unseen_weight, w[~is_missing & ~is_bad].sum())
        fq.unseen_examples = sorted(unseen, key=lambda k: -unseen[k])[:5]
    return fq
