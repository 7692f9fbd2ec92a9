"""``appliance models import|attach|list|show|alias|unalias|history|tag|describe|export``."""

from __future__ import annotations

from typing import Any

import click

from appliance import registry
from appliance.cli._common import Env, echo_json, pass_env
from appliance.cli._promotion import PROMOTION_COMMANDS
from appliance.errors import BadInput


@click.group("models")
def models_group() -> None:
    """The model registry: versions, aliases and their history, tags."""


_REFERENCE_HELP = ("Dataset (NAME@VERSION) whose profile becomes the drift reference: "
                   "the model's training data.")
_EVAL_HELP = ("Dataset (NAME@VERSION, registered with --target) the appliance scores the "
              "model on: its test metrics and the rows of its metric gates.")


def _echo_version(mv: registry.ModelVersion, as_json: bool, note: str = "") -> None:
    if as_json:
        echo_json(mv.as_dict())
        return
    click.echo(mv.ref + (f"  ({note})" if note else ""))
    test = mv.metrics.get("test")
    if isinstance(test, dict) and test:
        click.echo(f"test on {mv.dataset}: " + " ".join(
            f"{k}={v:.4g}" for k, v in test.items() if isinstance(v, (int, float))))


@models_group.command("import")
@click.argument("name")
@click.argument("file", type=click.Path())
@click.option("--description", default="", help="What this version is, for the registry.")
@click.option("--reference", default=None, metavar="DATASET", help=_REFERENCE_HELP)
@click.option("--eval", "evaluation", default=None, metavar="DATASET", help=_EVAL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the new version as JSON.")
@pass_env
def models_import(env: Env, name: str, file: str, description: str, reference: str | None,
                  evaluation: str | None, as_json: bool) -> None:
    """Register an ONNX model made elsewhere as the next version of NAME.

    FILE is an .onnx file, or a language model's folder (onnxruntime-genai's:
    genai_config.json, model.onnx and its data, the tokenizer files).

    A file must pass onnx.checker and one inference on zeros; a folder must hold
    every file its configuration names and a tokenizer that loads, and is hashed
    as a whole. Prints NAME@VERSION. The same file or folder imported again gives
    back the version it already is. With --reference and --eval an ONNX file gets
    a drift profile and metric gates like a trained model; each model input must
    be a column of those datasets, by name.
    """
    from pathlib import Path

    if Path(file).is_dir():
        if reference or evaluation:
            raise BadInput("--reference and --eval are for tabular ONNX files; a language "
                           "model's evaluation sets come with 'appliance llm'")
        with env.home.db() as db:
            mv, created = registry.import_folder(db, env.home.blobs, name,
                                                 file, actor=env.actor,
                                                 description=description)
        _echo_version(mv, as_json, "" if created else "already registered: the same files")
        return
    with env.home.db() as db:
        from appliance.promotion.imported import import_with_data  # scores with onnxruntime

        mv, created = import_with_data(env.home, db, name, file, actor=env.actor,
                                       description=description, reference=reference,
                                       evaluation=evaluation)
    _echo_version(mv, as_json, "" if created else "already registered: the same file")


@models_group.command("attach")
@click.argument("ref")
@click.option("--reference", default=None, metavar="DATASET", help=_REFERENCE_HELP)
@click.option("--eval", "evaluation", default=None, metavar="DATASET", help=_EVAL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@pass_env
def models_attach(env: Env, ref: str, reference: str | None, evaluation: str | None,
                  as_json: bool) -> None:
    """Give an imported version REF its reference and/or evaluation dataset, once each.

    The reference gives drift and quality checks their baseline; the evaluation
    set is scored by the appliance on the ONNX file and feeds the metric gates.
    """
    with env.home.db() as db:
        from appliance.promotion.imported import attach  # scores with onnxruntime

        mv = attach(env.home, db, ref, actor=env.actor, reference=reference,
                    evaluation=evaluation)
    _echo_version(mv, as_json, f"reference {mv.signature.get('reference_dataset') or '-'}, "
                  f"evaluation {mv.dataset or '-'}")


@models_group.command("list")
@click.argument("name", required=False)
@click.option("--limit", default=None, type=int, help="With NAME: show only the newest N versions.")
@click.option("--json", "as_json", is_flag=True, help="Print the models or versions as JSON.")
@pass_env
def models_list(env: Env, name: str | None, limit: int | None, as_json: bool) -> None:
    """List models, or with NAME the versions of one model (newest first)."""
    with env.home.db() as db:
        rows = registry.list_versions(db, name, limit=limit) if name else registry.list_models(db)
    if as_json:
        echo_json(rows)
        return
    if name:
        click.echo(f"{'VERSION':>7} {'SOURCE':<7} {'RUN':>5} {'ALIASES':<24} CREATED")
        for r in rows:
            click.echo(f"{r['version']:>7} {r['source']:<7} {r['run_id'] or '-':>5} "
                       f"{','.join(r['aliases']) or '-':<24} {r['created_at'][:19]} "
                       f"{r['created_by']}")
        return
    if not rows:
        click.echo("no models; train one with 'appliance train RECIPE.yaml' or "
                   "'appliance models import NAME FILE.onnx'")
        return
    click.echo(f"{'NAME':<24} {'LATEST':>6} {'VERSIONS':>8}  ALIASES")
    for r in rows:
        aliases = " ".join(f"{a}={v}" for a, v in r["aliases"].items()) or "-"
        click.echo(f"{r['name']:<24} {r['latest'] or '-':>6} {r['versions']:>8}  {aliases}")


def _lineage(env: Env, mv: registry.ModelVersion, db: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"model_version": mv.as_dict()}
    if mv.run_id is not None:
        from appliance.training import get_run  # the training stack: only for lineage

        run = get_run(db, mv.run_id)
        info["run"] = {k: run.as_dict()[k] for k in (
            "id", "status", "dataset", "dataset_digest", "code_hash", "env_hash", "seed",
            "device", "started_at", "ended_at", "actor", "weights_digest")}
    info["alias_history"] = [h for h in registry.alias_history(db, mv.name)
                             if h["version"] == mv.version or h["previous"] == mv.version]
    return info


@models_group.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the version and lineage as JSON.")
@pass_env
def models_show(env: Env, ref: str, as_json: bool) -> None:
    """Show NAME@VERSION or NAME@ALIAS (NAME: production, else the latest) with its lineage.

    Lineage: the dataset and run that made it, metrics, signature, and who moved
    which alias to or from it when.
    """
    with env.home.db() as db:
        mv = registry.resolve(db, ref)
        info = _lineage(env, mv, db)
    if as_json:
        echo_json(info)
        return
    click.echo(f"{mv.ref}  ({mv.source})  aliases: {', '.join(mv.aliases) or '-'}")
    click.echo(("folder manifest" if mv.signature.get("kind") == "llm" else "onnx") + f" sha256:{mv.onnx_digest}")
    click.echo(f"registered {mv.created_at} by {mv.created_by}")
    if mv.description:
        click.echo(f"description: {mv.description}")
    if mv.tags:
        click.echo("tags: " + ", ".join(f"{k}={v}" for k, v in mv.tags.items()))
    run = info.get("run")
    if run:
        click.echo(f"run {run['id']} on dataset {run['dataset']} (sha256:{run['dataset_digest']})")
        click.echo(f"code sha256:{run['code_hash']}  env sha256:{run['env_hash']}  "
                   f"seed {run['seed']}")
    for split, values in mv.metrics.items():
        if isinstance(values, dict):
            click.echo(f"{split}: " + " ".join(
                f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, (int, float))))
    if mv.signature.get("kind") == "llm":
        sig = mv.signature
        click.echo(f"kind llm ({sig.get('model_type') or '?'}): context "
                   f"{sig.get('context_length')} tokens, vocabulary {sig.get('vocab_size')}, "
                   f"{_count(sig.get('parameters'))} parameters, {sig.get('files')} files "
                   f"({_count(sig.get('size_bytes'))}B), chat template: "
                   f"{'the model' if sig.get('chat_template') else 'plain'}")
    for side in ("inputs", "outputs") if mv.signature.get("kind") != "llm" else ():
        specs = mv.signature.get(side, [])
        click.echo(f"{side}: " + ", ".join(
            f"{s['name']} {s['datatype']}{s['shape']}" for s in specs))
    for h in info["alias_history"]:
        click.echo(f"{h['at'][:19]} {h['actor']}: {h['alias']} "
                   f"{h['previous'] or '-'} -> {h['version'] or '(removed)'}")


def _count(value: Any) -> str:
    """1234567 -> 1.23M: parameters and bytes, as people say them."""
    if not isinstance(value, int):
        return "?"
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return str(value)


SERVING_ALIASES = ("production", "shadow", "canary")


def _refuse_serving_alias(alias: str) -> None:
    if alias in SERVING_ALIASES:
        raise BadInput(
            f"'{alias}' decides what is served and moves only through the promotion gates: use "
            "'appliance models promote NAME@VERSION --to production|shadow|canary', "
            "'appliance models rollback NAME' or 'appliance models rollout NAME --abort'"
        )


@models_group.command("alias")
@click.argument("ref")
@click.argument("alias")
@click.option("--reason", default="", help="Why, recorded in the alias history and audit log.")
@pass_env
def models_alias(env: Env, ref: str, alias: str, reason: str) -> None:
    """Point ALIAS (staging, candidate or any name) of a model at NAME@VERSION.

    The aliases that decide what is served (production, shadow, canary) move only through
    'appliance models promote' (the gates) and 'appliance models rollback'.
    """
    _refuse_serving_alias(alias)
    parsed = registry.parse_ref(ref, "model reference")
    with env.home.db() as db:
        if parsed.version is None:
            version = registry.resolve(db, parsed).version
        else:
            version = parsed.version
        move = registry.set_alias(db, parsed.name, version, alias, env.actor, reason=reason)
    if move.changed:
        click.echo(f"{move.name}@{move.alias}: {move.previous or '-'} -> {move.version}")
    else:
        click.echo(f"{move.name}@{move.alias} already points at {move.version}")


@models_group.command("unalias")
@click.argument("name")
@click.argument("alias")
@click.option("--reason", default="", help="Why, recorded in the alias history and audit log.")
@pass_env
def models_unalias(env: Env, name: str, alias: str, reason: str) -> None:
    """Remove ALIAS from model NAME (kept in its history); not production, shadow or canary."""
    _refuse_serving_alias(alias)
    with env.home.db() as db:
        move = registry.remove_alias(db, name, alias, env.actor, reason=reason)
    click.echo(f"{name}@{alias}: {move.previous} -> (removed)")


@models_group.command("history")
@click.argument("name")
@click.option("--alias", default=None, help="Only this alias's moves.")
@click.option("--at", "at_time", default=None,
              help="With --alias: print only the version it pointed at at this ISO 8601 time.")
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON.")
@pass_env
def models_history(env: Env, name: str, alias: str | None, at_time: str | None,
                   as_json: bool) -> None:
    """Every alias move of model NAME, oldest first: when, who, from and to which version."""
    if at_time is not None and alias is None:
        raise click.UsageError("--at needs --alias (which alias to look up)")
    with env.home.db() as db:
        if at_time is not None and alias is not None:
            version = registry.alias_at(db, name, alias, at_time)
            if as_json:
                echo_json({"name": name, "alias": alias, "at": at_time, "version": version})
            else:
                click.echo(f"{name}@{version}" if version is not None else
                           f"{name} had no alias '{alias}' at {at_time}")
            return
        rows = registry.alias_history(db, name, alias)
    if as_json:
        echo_json(rows)
        return
    for h in rows:
        reason = f"  ({h['reason']})" if h["reason"] else ""
        click.echo(f"{h['at']} {h['actor']}: {h['alias']} {h['previous'] or '-'} -> "
                   f"{h['version'] or '(removed)'}{reason}")


@models_group.command("tag")
@click.argument("ref")
@click.argument("pairs", nargs=-1, required=True)
@pass_env
def models_tag(env: Env, ref: str, pairs: tuple[str, ...]) -> None:
    """Set tags KEY=VALUE on a version (KEY= removes KEY)."""
    with env.home.db() as db:
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise click.UsageError(f"tag {pair!r}: expected KEY=VALUE")
            mv = registry.set_tag(db, ref, key, value or None, actor=env.actor)
    click.echo(f"{mv.ref}: " + (", ".join(f"{k}={v}" for k, v in mv.tags.items()) or "no tags"))


@models_group.command("describe")
@click.argument("ref")
@click.argument("text")
@pass_env
def models_describe(env: Env, ref: str, text: str) -> None:
    """Set the description of a model (NAME) or of one version (NAME@VERSION)."""
    with env.home.db() as db:
        registry.set_description(db, ref, text, actor=env.actor)
    click.echo(f"described {ref}")


@models_group.command("export")
@click.argument("ref")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["triton", "kserve"]), required=True,
              help="triton: a Triton model repository; kserve: KServe's ONNX runtime layout "
                   "and an InferenceService.")
@click.option("--max-batch-size", default=64, show_default=True, type=int,
              help="Triton's max_batch_size when the first dimension is the batch (0: none).")
@click.option("--queue-delay-us", default=0, show_default=True, type=int,
              help="Triton's dynamic batching max_queue_delay_microseconds.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@pass_env
def models_export(env: Env, ref: str, directory: str, fmt: str, max_batch_size: int,
                  queue_delay_us: int, as_json: bool) -> None:
    """Write NAME@ALIAS (or NAME@VERSION) under DIR/NAME for Triton or KServe; audited.

    The model file is the registered one byte for byte, with its signature and a
    provenance.json; a signed version whose signature does not verify is refused.
    """
    from appliance.registry.export import export_model

    with env.home.db() as db:
        done = export_model(db, env.home.blobs, env.home.keys_dir, ref, directory, fmt,
                            actor=env.actor, max_batch_size=max_batch_size,
                            queue_delay_us=queue_delay_us)
    if as_json:
        echo_json(done.as_dict())
        return
    click.echo(f"{done.ref} exported for {done.format} to {done.path} "
               f"(sha256:{done.onnx_digest}, audit entry {done.audit_seq})")
    if not done.signed:
        click.echo(f"note: {done.ref} is not signed (never promoted through the gates)")


for _command in PROMOTION_COMMANDS:  # promote, approve, rollback, rollout, card, policy
    models_group.add_command(_command)

COMMANDS = [models_group]
