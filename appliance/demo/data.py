"""Loan applications, generated: realistic enough that drift and retraining mean something.

Twenty features, numeric and categorical, and a ``default`` label drawn from a
logistic model whose weights a credit analyst would find plausible (a low
credit score, a high debt-to-income ratio and late payments raise the risk;
income, savings and a cosigner lower it). Three regimes:

- ``baseline``: the data the first model is trained on;
- ``data_drift``: the applicant population changes (lower incomes, lower
  scores, more applications through brokers), the relation to default does not;
- ``concept_drift``: the same population as ``data_drift``, but the relation
  changes: debt-to-income and the broker channel now matter far more, as when an
  economic shock hits over-leveraged borrowers.

Everything is seeded, so the same arguments give the same rows.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

REGIMES = ("baseline", "data_drift", "concept_drift")
NUMERIC = (
    "age", "income", "loan_amount", "interest_rate", "credit_score", "employment_years",
    "debt_to_income", "num_credit_lines", "num_late_payments", "savings_balance",
    "monthly_expenses", "previous_defaults", "loan_to_income",
)
CATEGORICAL = (
    "term_months", "home_ownership", "purpose", "region", "employment_type",
    "application_channel", "has_cosigner",
)
FEATURES = NUMERIC + CATEGORICAL
TARGET = "default"


def _choice(rng: np.random.Generator, values: tuple[str, ...], p: list[float], n: int) -> np.ndarray:
    return rng.choice(np.array(values, dtype=object), size=n, p=np.array(p) / sum(p))


def generate(n: int, regime: str = "baseline", seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` applications as columns (feature name -> array), plus the ``default`` label."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, not {regime!r}")
    rng = np.random.default_rng(seed)
    shifted = regime != "baseline"
    age = np.clip(rng.normal(41, 11, n), 19, 80).round()
    income = np.exp(rng.normal(np.log(52_000 if not shifted else 39_000), 0.45, n)).round(-2)
    credit_score = np.clip(rng.normal(690 if not shifted else 640, 60, n), 300, 850).round()
    employment_years = np.clip(rng.gamma(2.0, 3.5, n), 0, 45).round(1)
    loan_amount = np.exp(rng.normal(np.log(14_000), 0.6, n)).round(-2)
    term = _choice(rng, ("12", "24", "36", "60"), [1, 2, 4, 3], n)
    interest_rate = np.clip(
        4 + (720 - credit_score) / 25 + rng.normal(0, 1.2, n) + (term == "60") * 1.0, 2, 30
    ).round(2)
    monthly_expenses = (income / 12 * np.clip(rng.normal(0.45, 0.12, n), 0.1, 0.9)).round(-1)
    debt_to_income = np.clip(rng.normal(0.28 if not shifted else 0.34, 0.1, n), 0.0, 0.95).round(3)
    num_credit_lines = rng.poisson(5, n).astype(float)
    num_late_payments = rng.poisson(0.6 if not shifted else 0.9, n).astype(float)
    savings_balance = np.exp(rng.normal(np.log(6_000 if not shifted else 3_500), 1.0, n)).round(-1)
    previous_defaults = rng.binomial(1, 0.06 if not shifted else 0.09, n).astype(float)
    loan_to_income = (loan_amount / income).round(4)
    home = _choice(rng, ("rent", "own", "mortgage"), [4, 2, 4], n)
    purpose = _choice(rng, ("car", "home_improvement", "education", "business",
                            "debt_consolidation", "medical"), [3, 2, 1, 1, 3, 1], n)
    region = _choice(rng, ("north", "south", "east", "west", "central"), [1, 1, 1, 1, 1], n)
    employment_type = _choice(rng, ("salaried", "self_employed", "contract", "unemployed"),
                              [7, 2, 1.5, 0.4], n)
    channel = _choice(rng, ("branch", "online", "broker"),
                      [3, 5, 1] if not shifted else [2, 4, 4], n)
    cosigner = _choice(rng, ("yes", "no"), [1, 6], n)

    z = (
        -2.3
        - 0.012 * (credit_score - 680)
        + 4.0 * (debt_to_income - 0.3)
        + 0.45 * num_late_payments
        + 1.2 * previous_defaults
        - 0.6 * (np.log(income) - np.log(50_000))
        + 1.1 * (loan_to_income - 0.3)
        - 0.15 * np.log1p(savings_balance / 1000)
        - 0.5 * (cosigner == "yes")
        + 0.6 * (employment_type == "unemployed")
        + 0.2 * (term == "60")
        + 0.03 * (interest_rate - 10)
    )
    if regime == "concept_drift":
        z = z + 6.0 * (debt_to_income - 0.3) + 1.6 * (channel == "broker") \
            - 0.8 * (channel == "branch") + 0.9 * (home == "rent")
    default = rng.random(n) < 1.0 / (1.0 + np.exp(-z))
    return {
        "age": age, "income": income, "loan_amount": loan_amount,
        "interest_rate": interest_rate, "credit_score": credit_score,
        "employment_years": employment_years, "debt_to_income": debt_to_income,
        "num_credit_lines": num_credit_lines, "num_late_payments": num_late_payments,
        "savings_balance": savings_balance, "monthly_expenses": monthly_expenses,
        "previous_defaults": previous_defaults, "loan_to_income": loan_to_income,
        "term_months": term, "home_ownership": home, "purpose": purpose, "region": region,
        "employment_type": employment_type, "application_channel": channel,
        "has_cosigner": cosigner, TARGET: np.where(default, "yes", "no").astype(object),
    }


def write_csv(columns: dict[str, np.ndarray], path: Path) -> Path:
    names = list(columns)
    n = len(next(iter(columns.values())))
    tmp = path.with_suffix(path.suffix + ".partial")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for i in range(n):
            writer.writerow([_fmt(columns[c][i]) for c in names])
    tmp.replace(path)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float | np.floating):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(round(f, 6))
    return str(value)


def rows(columns: dict[str, np.ndarray], start: int, stop: int) -> list[dict[str, Any]]:
    """Rows ``start:stop`` as dicts of feature values (no label)."""
    return [{c: columns[c][i] for c in FEATURES} for i in range(start, stop)]
