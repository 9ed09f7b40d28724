"""`pks audit ...`: the audit workbench's commands (mounted by pks.cli). The web app and its
dependencies load only inside the commands that need them."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pks.cliutil import friendly, load_taxonomy, need_audit, need_manifest
from pks.errors import UserError

audit_app = typer.Typer(
    help="The annotators' audit workbench: users, agreement, corrections back into the run.", no_args_is_help=True
)


@audit_app.command("add-user")
@friendly
def audit_add_user(
    out: Path = typer.Argument(..., help="A curated output folder."),
    name: str = typer.Argument(..., help="Login name."),
    role: str = typer.Option("annotator", help="annotator (labels) or lead (adjudicates, manages gold)"),
):
    """Create an audit user in OUT/audit/audit.db and print their login token."""
    from annotators.audit.store import Store

    need_manifest(out)
    store = Store(out)
    try:
        typer.echo(store.add_user(name, role))
    finally:
        store.close()


@audit_app.command("serve")
@friendly
def audit_serve(
    out: Path = typer.Argument(..., help="A curated output folder (manifest.parquet and clips/)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8765, help="Port."),
    overlap: int = typer.Option(2, help="Annotators per clip (agreement needs 2 or more)."),
    strategy: str = typer.Option("uncertain", help="uncertain | stratified | random"),
    gold_rate: float = typer.Option(0.1, help="Share of each annotator's clips that are gold clips."),
    idle_hours: float = typer.Option(
        12.0, help="A session ends after this many hours without a request (and 7 days after login in any case)."
    ),
):
    """Serve the audit workbench (log in with a token from pks audit add-user). Off loopback
    the session cookie is Secure: put the server behind TLS."""
    from annotators.audit.queue import QueueConfig
    from annotators.audit.web import create_app

    need_manifest(out)
    try:
        queue = QueueConfig(overlap=overlap, strategy=strategy, gold_rate=gold_rate)
    except ValueError as e:
        raise UserError(str(e)) from None
    import uvicorn

    typer.echo(f"pks audit: http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(
        create_app(out, queue, host=host, session_idle=idle_hours * 3600), host=host, port=port, log_level="warning"
    )


@audit_app.command("revoke")
@friendly
def audit_revoke(
    out: Path = typer.Argument(..., help="A curated output folder with an audit."),
    name: str = typer.Argument(..., help="The user to lock out."),
):
    """Lock a user out at once: their token stops working and their sessions end (running
    servers included)."""
    from annotators.audit.store import Store

    need_audit(out)
    store = Store(out)
    try:
        n = store.revoke(name)
    finally:
        store.close()
    typer.echo(f"revoked {name}: their token no longer logs in; {n} open session(s) ended")


@audit_app.command("export")
@friendly
def audit_export(
    out: Path = typer.Argument(..., help="A curated output folder."),
    format: str = typer.Option("label-studio", "--format", help="label-studio"),
    dest: Path | None = typer.Option(
        None, "--out", help="Folder for config.xml and tasks.json (default OUT/audit/label-studio)."
    ),
    video_prefix: str = typer.Option(
        "/data/local-files/?d=clips/", help="How Label Studio reaches OUT/clips/ (URL prefix)."
    ),
):
    """Label Studio tasks (model captions as predictions) and a labelling config from the taxonomy."""
    from annotators.audit.labelstudio import export

    need_manifest(out)
    if format != "label-studio":
        raise UserError(f"--format: only label-studio is supported, got {format!r}")
    dest = dest or out / "audit" / "label-studio"
    n = export(out, dest, load_taxonomy(None), video_prefix)
    typer.echo(f"{n} tasks -> {dest / 'tasks.json'}; labelling config -> {dest / 'config.xml'}")


@audit_app.command("import")
@friendly
def audit_import(
    out: Path = typer.Argument(..., help="A curated output folder."),
    file: Path = typer.Argument(..., help="A Label Studio JSON export."),
):
    """Label Studio annotations into the audit store (as labels by ls-NAME users)."""
    from annotators.audit.labelstudio import import_
    from annotators.audit.store import Store

    need_manifest(out)
    if not file.exists():
        raise UserError(f"no such file: {file}")
    store = Store(out)
    try:
        counts = import_(out, file, store, load_taxonomy(None))
    finally:
        store.close()
    typer.echo(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))


@audit_app.command("stats")
@friendly
def audit_stats(
    out: Path = typer.Argument(..., help="A curated output folder with an audit."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
):
    """Agreement per axis and tag (Cohen's kappa, Krippendorff's alpha), model vs human per tag,
    most confused tags, accuracy on gold clips."""
    from annotators.audit.stats import audit_stats as compute
    from annotators.audit.stats import format_stats
    from annotators.audit.store import Store

    need_audit(out)
    store = Store(out)
    try:
        s = compute(out, store, load_taxonomy(None))
    finally:
        store.close()
    typer.echo(json.dumps(s, indent=1, default=str) if as_json else format_stats(s))


@audit_app.command("apply")
@friendly
def audit_apply(
    out: Path = typer.Argument(..., help="A curated output folder with an audit."),
    config: Path | None = typer.Option(None, help="Job config YAML."),
):
    """Write adjudicated labels into the run's parts and manifest (caption_source human:LEAD);
    clips adjudicated as failures become rejected. Then rerun pks shard."""
    from annotators.audit.apply import apply_adjudications
    from annotators.audit.store import Store
    from pks.config import load_config

    need_audit(out)
    store = Store(out)
    try:
        counts = apply_adjudications(out, load_config(config), store)
    finally:
        store.close()
    typer.echo(
        f"captions written: {counts['captions']}, clips rejected as failures: {counts['rejected']}, "
        f"already applied: {counts['unchanged']}"
    )
    if counts["captions"] or counts["rejected"]:
        typer.echo(f"rerun `pks shard {out}` to rewrite the shards")
