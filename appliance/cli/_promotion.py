"""``appliance models promote|approve|rollback|rollout|card|policy``: added to the models group."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.errors import Unauthorized

if TYPE_CHECKING:
    from appliance.auth import Principal
    from appliance.promotion.gates import GateReport


def _principal(env: Env) -> Principal:
    principal = env.principal
    if principal is None:
        raise Unauthorized(f"{env.actor} is not an appliance user; ask an admin to run "
                           "'appliance users add' for this account")
    return principal


def _print_report(report: GateReport) -> None:
    click.echo(f"{report.ref} -> {report.target}"
               + (f" (production now {report.baseline})" if report.baseline else ""))
    click.echo(f"{'GATE':<36} {'VALUE':<28} {'THRESHOLD':<40} RESULT")
    for g in report.gates:
        value = f"{g.value:.4g}" if isinstance(g.value, float) else str(g.value)
        click.echo(f"{g.gate:<36} {value[:28]:<28} {g.threshold[:40]:<40} "
                   f"{'pass' if g.passed else 'FAIL'}" + (f"  {g.detail}" if g.detail and
                                                          not g.passed else ""))


@click.command("promote")
@click.argument("ref")
@click.option("--to", "to", default="production", show_default=True,
              type=click.Choice(["production", "canary", "shadow"]),
              help="production moves the alias now; shadow or canary starts a staged rollout.")
@click.option("--force", is_flag=True, help="Promote despite failed gates (admin only).")
@click.option("--reason", default="", help="Why; required with --force, kept in the audit log.")
@click.option("--breaking-change", is_flag=True,
              help="Declare that the inputs/outputs change on purpose; the signature gate passes.")
@click.option("--json", "as_json", is_flag=True, help="Print the gate report as JSON.")
@pass_env
def models_promote(env: Env, ref: str, to: str, force: bool, reason: str,
                   breaking_change: bool, as_json: bool) -> None:
    """Run the promotion gates on NAME@VERSION and, when they pass, promote it.

    Prints each gate with its value, threshold and result; exits 1 naming the
    failed gates. The report is stored with the version either way.
    """
    from appliance import promotion  # gates, ONNX checks: loaded when used

    try:
        result = promotion.promote(env.home, ref, _principal(env), to=to, force=force,
                                   reason=reason, breaking_change=breaking_change,
                                   config=env.config)
    except promotion.PromotionRefused as exc:
        if as_json:
            echo_json(exc.report.as_dict())
        else:
            _print_report(exc.report)
        raise
    if as_json:
        echo_json(result.as_dict())
        return
    _print_report(result.report)
    if result.forced:
        click.echo(f"FORCED by {env.actor}: {reason}")
    if result.rollout_id is not None:
        click.echo(f"rollout {result.rollout_id} started: {result.ref} in {to}; "
                   f"'appliance models rollout {result.ref.split('@')[0]}' shows it")
    else:
        click.echo(f"{result.ref} is now production")


@click.command("approve")
@click.argument("ref")
@click.option("--comment", default="", help="A note kept with the approval.")
@pass_env
def models_approve(env: Env, ref: str, comment: str) -> None:
    """Approve the promotion of NAME@VERSION (approver or admin, not its trainer)."""
    from appliance import promotion  # gates, ONNX checks: loaded when used

    done = promotion.approve(env.home, ref, _principal(env), comment=comment)
    click.echo(f"{done['ref']} approved by {done['approver']} ({done['role']})")


@click.command("rollback")
@click.argument("name")
@click.option("--reason", default="", help="Why, kept in the alias history and audit log.")
@pass_env
def models_rollback(env: Env, name: str, reason: str) -> None:
    """Put back the production version that the last production move replaced."""
    from appliance import promotion  # gates, ONNX checks: loaded when used

    move = promotion.rollback(env.home, name, _principal(env), reason=reason)
    click.echo(f"{name}@production: {move.previous} -> {move.version}")


@click.command("rollout")
@click.argument("name")
@click.option("--advance", is_flag=True,
              help="Check the request log now and advance or roll back the rollout.")
@click.option("--abort", is_flag=True, help="Roll the rollout in progress back by hand.")
@click.option("--reason", default="", help="With --abort: why.")
@click.option("--json", "as_json", is_flag=True, help="Print the rollouts as JSON.")
@pass_env
def models_rollout(env: Env, name: str, advance: bool, abort: bool, reason: str,
                   as_json: bool) -> None:
    """Show NAME's staged rollouts (shadow, canary, production or rolled back)."""
    from appliance import promotion  # gates, ONNX checks: loaded when used

    if advance and abort:
        raise click.UsageError("--advance and --abort exclude each other")
    if abort:
        promotion.abort_rollout(env.home, name, actor=_principal(env).name,
                                reason=reason or "aborted by hand")
    if advance:
        for step in promotion.advance_rollouts(env.home, name=name,
                                               actor=_principal(env).name):
            click.echo(f"rollout {step.rollout_id}: {step.decision} "
                       f"({step.state_before} -> {step.state_after}): "
                       + "; ".join(step.reasons))
    with env.home.db() as db:
        rows = promotion.rollout_status(db, name)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"{name} has no rollouts; start one with 'appliance models promote "
                   f"{name}@VERSION --to shadow'")
    for r in rows:
        check = r["last_check"]
        click.echo(f"{r['id']:>4} {name}@{r['candidate']} vs @{r['baseline']}: {r['state']:<11}"
                   f" started {r['created_at'][:19]}"
                   + (f"  last: {check.get('decision')} - {'; '.join(check.get('reasons', []))}"
                      if check else "") + (f"  ({r['reason']})" if r["reason"] else ""))


@click.command("card")
@click.argument("ref")
@click.option("--html", "html_out", default=None, type=click.Path(dir_okay=False),
              help="Also write the card as one self-contained HTML file here.")
@click.option("--json", "as_json", is_flag=True, help="Print the card's data as JSON.")
@pass_env
def models_card(env: Env, ref: str, html_out: str | None, as_json: bool) -> None:
    """Print the model card of NAME@VERSION (Markdown): data, training, gates, lineage."""
    from appliance import promotion  # gates, ONNX checks: loaded when used

    card = promotion.model_card(env.home, ref)
    if html_out:
        Path(html_out).write_text(promotion.render_html(card), encoding="utf-8")
    if as_json:
        echo_json(card)
    else:
        click.echo(promotion.render_markdown(card))


@click.command("policy")
@click.argument("name")
@click.argument("file", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the policy in force as JSON.")
@pass_env
def models_policy(env: Env, name: str, file: str | None, as_json: bool) -> None:
    """Set NAME's promotion policy from FILE.yaml, or show the one in force."""
    from appliance import promotion  # gates, ONNX checks: loaded when used

    with env.home.db() as db:
        if file is not None:
            policy = promotion.set_policy(db, name, Path(file).read_text(encoding="utf-8"),
                                          actor=env.actor)
            source = None
        else:
            policy = promotion.get_policy(db, name)
            source = promotion.policy_source(db, name)
    if as_json:
        echo_json(policy)
    elif file is not None:
        click.echo(f"policy of {name} set")
    elif source is not None:
        click.echo(source)
    else:
        import yaml  # only to print the default policy

        click.echo("# default policy\n" + yaml.safe_dump(policy, sort_keys=False))


PROMOTION_COMMANDS = [models_promote, models_approve, models_rollback, models_rollout,
                      models_card, models_policy]
