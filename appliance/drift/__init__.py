"""Drift: data and prediction drift against a reference, streaming concept-drift detectors,
performance metrics and a label-free performance estimate."""

from appliance.drift.check import (
    MODES,
    ColumnDrift,
    DriftOptions,
    DriftReport,
    Reference,
    check,
)

__all__ = ["MODES", "ColumnDrift", "DriftOptions", "DriftReport", "Reference", "check"]
