"""What the CLI calls: train and register the classifier, evaluate the input checks.

``evaluate`` reports, for the held-out split (or a site's own labelled file), the recall
on attacks and the false-positive rate on benign prompts of the classifier alone and of
the whole input check (normalising, decoding, patterns and classifier, as the policy
sets them). A labelled file is JSON lines: ``{"text": "...", "label": "attack"}`` or
``"benign"``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import BadInput, NotFound
from appliance.guardrails import data, train
from appliance.guardrails.guard import Guard, load_classifier
from appliance.guardrails.policy import load as load_policies
from appliance.registry.versions import ModelVersion
from appliance.storage.blobs import BlobStore
from appliance.storage.db import Database


def train_and_register(config: Config, db: Database, blobs: BlobStore, *,
                       actor: str) -> tuple[ModelVersion, dict[str, Any]]:
    """Train on the training split, measure on the held-out one, register; (version,
    metrics)."""
    started = time.perf_counter()
    corpus = data.corpus(config)
    fitted = train.fit(corpus.train_attacks, corpus.train_benign)
    model = train.to_onnx(fitted)
    from appliance.guardrails.classifier import Classifier

    scorer = Classifier.from_bytes(model, "new")
    attacks = list(scorer.score(corpus.test_attacks) >= train.THRESHOLD)
    benign = list(scorer.score(corpus.test_benign) >= train.THRESHOLD)
    metrics = {"held_out": train.rates(attacks, benign), "threshold": train.THRESHOLD,
               "train": {"attacks": len(corpus.train_attacks),
                         "benign": len(corpus.train_benign)},
               "seconds": round(time.perf_counter() - started, 1)}
    name = config["guardrails.classifier"].split("@", 1)[0]
    mv = train.register(db, blobs, model, corpus, metrics, actor=actor, name=name)
    return mv, metrics


def read_labelled(path: Path) -> tuple[list[str], list[str]]:
    """(attacks, benign) from a JSON-lines file; bad input names the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: can not be read as UTF-8 text ({exc})") from None
    attacks: list[str] = []
    benign: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise BadInput(f"{path} line {n}: not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) \
                or row.get("label") not in ("attack", "benign"):
            raise BadInput(f"{path} line {n}: expected {{\"text\": \"...\", \"label\": "
                           "\"attack\" or \"benign\"}")
        (attacks if row["label"] == "attack" else benign).append(row["text"])
    if not attacks and not benign:
        raise BadInput(f"{path}: no labelled prompts")
    return attacks, benign


def evaluate(config: Config, db: Database, blobs: BlobStore,
             file: Path | None = None) -> dict[str, Any]:
    """Recall and false-positive rate of the classifier and of the whole input check."""
    if file is not None:
        attacks, benign = read_labelled(file)
        source = str(file)
    else:
        corpus = data.corpus(config)
        attacks, benign, source = corpus.test_attacks, corpus.test_benign, "held-out split"
    ref = config["guardrails.classifier"]
    classifier = load_classifier(db, blobs, ref)
    if classifier is None:
        raise NotFound(f"no version of the classifier {ref}; run 'appliance guardrails train' "
                       "or import one with 'appliance models import'")
    policy = load_policies(config["guardrails.policies"]).for_request()
    guard = Guard(classifier)
    rule = policy.enabled("injection_classifier")
    threshold = rule.threshold if rule and rule.threshold is not None else train.THRESHOLD
    out: dict[str, Any] = {"source": source, "classifier": classifier.ref,
                           "threshold": threshold}
    out["classifier_alone"] = train.rates(
        [bool(s >= threshold) for s in classifier.score(attacks)] if attacks else [],
        [bool(s >= threshold) for s in classifier.score(benign)] if benign else [])
    out["input_check"] = train.rates(
        [bool(guard.check_input(t, policy).triggered) for t in attacks],
        [bool(guard.check_input(t, policy).triggered) for t in benign])
    out["missed"] = [t[:100] for t in attacks if not guard.check_input(t, policy).triggered][:5]
    out["false_positives"] = [t[:100] for t in benign
                              if guard.check_input(t, policy).triggered][:5]
    return out
