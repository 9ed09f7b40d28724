"""The `pks` command line (typer). User mistakes end in one clear line and a non-zero exit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from annotators.audit.cli import audit_app
from annotators.caption.cli import serve_vlm
from annotators.shots.cli import shots
from pks.cliutil import (
    STORAGE_OPTIONS_HELP,
    friendly,
    load_taxonomy,
    local_out,
    need_manifest,
    torch_device,
)
from pks.errors import UserError
from pks.progress import configure_logging
from pks.synth.cli import synth
from training.judge_cli import judge_app
from training.train_cli import train_app

app = typer.Typer(
    help="PKS: anime-native video curation, captioning and curriculum sharding.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tax_app = typer.Typer(help="Inspect the taxonomy and validate captions against it.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(tax_app, name="taxonomy")
app.add_typer(judge_app, name="judge")
app.add_typer(audit_app, name="audit")


@app.callback()
@friendly
def verbosity(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug lines too."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Warnings and errors only: no progress lines or bars (results still print)."
    ),
):
    if verbose and quiet:
        raise UserError("--verbose and --quiet contradict each other; give one")
    configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


# Commands whose bodies live in their packages are registered here, in the order `pks --help` lists them.
app.command()(synth)


@tax_app.command("show")
@friendly
def tax_show(
    axis: str | None = typer.Option(None, help="Only this axis."),
    version: int | None = typer.Option(None, help="Taxonomy version (default: newest)."),
):
    """Print the taxonomy: every tag with its definition."""
    tax = load_taxonomy(version)
    if axis and axis not in tax.axes:
        raise UserError(f"no axis {axis!r}; axes are {list(tax.axes)}")
    typer.echo(f"PKS taxonomy v{tax.version}")
    for name, ax in tax.axes.items():
        if axis and name != axis:
            continue
        typer.echo(f"\n[{name}] {ax.description} ({'many' if ax.multi else 'one'} per clip)")
        for t in ax.tags:
            m = " (measurable)" if t.measurable else ""
            typer.echo(f"  {t.id:<22} {t.label}{m}: {t.definition}")


@tax_app.command("schema")
@friendly
def tax_schema(version: int | None = typer.Option(None, help="Taxonomy version (default: newest).")):
    """Print the caption JSON Schema generated from the taxonomy."""
    typer.echo(json.dumps(load_taxonomy(version).json_schema(), indent=2))


@tax_app.command("validate")
@friendly
def tax_validate(
    file: Path = typer.Argument(..., help="A caption JSON object, a JSON list of them, or JSONL."),
    version: int | None = typer.Option(None, help="Taxonomy version (default: newest)."),
):
    """Validate captions against the taxonomy; exit 1 if any is invalid."""
    import taxonomy

    tax = load_taxonomy(version)
    if not file.exists():
        raise UserError(f"no such file: {file}")
    try:
        items = taxonomy.read_captions(file)
    except ValueError as e:
        raise UserError(str(e)) from None
    bad = 0
    for label, item in items:
        try:
            tax.validate(item)
        except taxonomy.CaptionError as e:
            bad += 1
            typer.echo(f"{label}: invalid: {e}")
    typer.echo(f"{len(items) - bad}/{len(items)} caption(s) valid against taxonomy v{tax.version}")
    if bad:
        raise typer.Exit(1)


@app.command("probe")
@friendly
def probe_cmd(videos: list[Path] = typer.Argument(..., help="Video files.")):
    """Probe videos with PyAV and print what ingest records (one JSON line each)."""
    from pks.probe import ProbeError, probe

    failed = 0
    for v in videos:
        try:
            typer.echo(json.dumps(probe(v).to_dict()))
        except (ProbeError, FileNotFoundError) as e:
            failed += 1
            typer.echo(json.dumps({"path": str(v), "error": str(e)}))
    if failed:
        raise typer.Exit(1)


app.command()(shots)


@app.command()
@friendly
def curate(
    input: str = typer.Argument(..., help="Folder, glob, list file (.txt) or fsspec URL of videos."),
    out: str = typer.Argument(
        ..., help="Output folder or object-store URL, e.g. s3://bucket/run (manifest.parquet, clips/, parts/)."
    ),
    config: Path | None = typer.Option(None, help="Job config YAML (see pipelines/configs/curate.yaml)."),
    detector: str | None = typer.Option(None, help="Shot detector (overrides split.detector)."),
    min_shot_s: float | None = typer.Option(None, help="Overrides split.min_shot_s."),
    max_shot_s: float | None = typer.Option(None, help="Overrides split.max_shot_s."),
    no_clips: bool = typer.Option(False, "--no-clips", help="Only the manifest, no clip files (and no shards)."),
    no_shard: bool = typer.Option(False, "--no-shard", help="Stop before writing shards (shard.enabled)."),
    captioner: str | None = typer.Option(
        None, help="auto | signals | openai | vllm | transformers | none (overrides caption.captioner)."
    ),
    endpoint: str | None = typer.Option(None, help="OpenAI-compatible VLM server, e.g. http://host:8000/v1."),
    model: str | None = typer.Option(None, help="Served model name (openai) or model folder (vllm, transformers)."),
    address: str | None = typer.Option(None, help="Ray cluster address (default: local, or RAY_ADDRESS)."),
    num_cpus: int | None = typer.Option(None, help="Local Ray CPUs."),
    retry_errors: bool = typer.Option(
        True,
        "--retry-errors/--no-retry-errors",
        help="Retry the error records of finished videos (the failed clips only).",
    ),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
):
    """Run the curation job on Ray Data: ingest, split into shots, cut clips, write OUT/manifest.parquet."""
    from pipelines.curate import run
    from pks.config import load_config
    from pks.store import parse_options

    cfg = load_config(
        config,
        {
            "ray.address": address,
            "ray.num_cpus": num_cpus,
            "split.detector": detector,
            "split.min_shot_s": min_shot_s,
            "split.max_shot_s": max_shot_s,
            "clips.write": False if no_clips else None,
            "caption.captioner": captioner,
            "shard.enabled": False if no_shard else None,
            "caption.endpoint": endpoint,
            "caption.model": model,
        },
    )
    summary = run(input, out, cfg, retry_errors=retry_errors, storage_options=parse_options(storage_options))
    typer.echo(json.dumps(summary))


@app.command()
@friendly
def caption(
    out: Path = typer.Argument(..., help="A curated output folder (with parts/ and clips/)."),
    config: Path | None = typer.Option(None, help="Job config YAML."),
    captioner: str | None = typer.Option(None, help="auto | signals | openai | vllm | transformers."),
    endpoint: str | None = typer.Option(None, help="OpenAI-compatible VLM server, e.g. http://host:8000/v1."),
    model: str | None = typer.Option(None, help="Served model name (openai) or model folder (vllm, transformers)."),
    concurrency: int | None = typer.Option(None, help="Requests in flight."),
):
    """Caption a run's ok clips in place (resumable: cached captions are reused)."""
    from pipelines.curate import caption_run
    from pks.config import load_config

    if not (local_out(out) / "parts").is_dir():
        raise UserError(f"no curated run in {out} (run pks curate first)")
    cfg = load_config(
        config,
        {
            "caption.captioner": captioner,
            "caption.endpoint": endpoint,
            "caption.model": model,
            "caption.concurrency": concurrency,
        },
    )
    if cfg.caption.captioner == "none":
        raise UserError("captioner 'none' captions nothing; choose signals, openai, vllm or transformers")
    typer.echo(json.dumps(caption_run(out, cfg)))


app.command("serve-vlm")(serve_vlm)


@app.command()
@friendly
def calibrate(
    out: Path = typer.Argument(..., help="A curated output folder (with manifest.parquet)."),
    config: Path | None = typer.Option(None, help="The job config YAML the run was curated with."),
    write: Path | None = typer.Option(
        None,
        help="Write a new job config here: --config's settings "
        "with the new thresholds (the --config file is not touched).",
    ),
    in_place: bool = typer.Option(
        False, "--in-place", help="Instead: set the thresholds in the --config file itself, keeping its comments."
    ),
    apply: bool = typer.Option(True, help="Re-stage the run's records with the new thresholds."),
):
    """Set curriculum thresholds from the deformation quartiles of a run's ok clips."""
    from pipelines.curate import calibrate_run

    need_manifest(out)
    if config and not config.exists():
        raise UserError(f"no such config file: {config}")
    got = calibrate_run(out, config, write, apply, in_place)
    typer.echo(f"curriculum.deformation: {got['thresholds']}")
    if write or in_place:
        typer.echo(f"written to {write or config}")
    if apply:
        typer.echo("clips per stage: " + ", ".join(f"{k}: {v}" for k, v in got["per_stage"].items()))
        typer.echo(f"stages changed: rerun `pks shard {out}` to rewrite the shards")


@app.command()
@friendly
def shard(
    out: str = typer.Argument(
        ..., help="A curated output folder or object-store URL (with manifest.parquet and clips/)."
    ),
    config: Path | None = typer.Option(None, help="Job config YAML (the shard section)."),
    max_samples: int | None = typer.Option(None, help="Samples per shard (shard.max_samples)."),
    max_bytes: int | None = typer.Option(None, help="Clip bytes per shard (shard.max_bytes)."),
    val_fraction: float | None = typer.Option(None, help="Share of source videos held out."),
    seed: int | None = typer.Option(None, help="Split and shuffle seed."),
    num_cpus: int | None = typer.Option(None, help="Local Ray CPUs."),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
):
    """Write OUT/shards/{split}/stage-{k}/shard-NNNNNN.tar and OUT/shards/index.parquet (resumable)."""
    from pipelines.shard import shard_run
    from pks.config import load_config
    from pks.store import as_store, parse_options, storage_errors

    store = as_store(out, parse_options(storage_options))
    with storage_errors(out):
        found = store.exists("manifest.parquet")
    if not found:
        raise UserError(f"no manifest in {out} (run pks curate first)")
    cfg = load_config(
        config,
        {
            "shard.max_samples": max_samples,
            "shard.max_bytes": max_bytes,
            "shard.val_fraction": val_fraction,
            "shard.seed": seed,
            "ray.num_cpus": num_cpus,
        },
    )
    typer.echo(json.dumps(shard_run(store, cfg)))


@app.command()
@friendly
def stats(out: Path = typer.Argument(..., help="A curated output folder.")):
    """The run's numbers in the terminal: statuses and reasons, stages, shards, tags, histograms, throughput."""
    from pipelines.report import format_stats, run_stats

    need_manifest(out)
    typer.echo(format_stats(run_stats(out)))


@app.command()
@friendly
def report(out: Path = typer.Argument(..., help="A curated output folder.")):
    """Write OUT/report.html: the stats with plots and contact sheets per stage, self-contained."""
    from pipelines.report import write_report

    need_manifest(out)
    typer.echo(str(write_report(out)))


@app.command()
@friendly
def generate(
    run: Path = typer.Argument(..., help="A training run folder."),
    tags: str = typer.Option("", help="axis=tag,... e.g. camera=pan_left,motion=combat_dash,shot=wide,stage=2"),
    narrative: str = typer.Option("", help="What happens (empty: tags only)."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("clip.mp4"), help="The mp4 to write."),
    steps: int | None = typer.Option(None, min=1, help="Sampler steps (sample.steps)."),
    guidance_tags: float | None = typer.Option(None, help="Tag guidance scale."),
    guidance_text: float | None = typer.Option(None, help="Narrative guidance scale."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:N (default: the GPU when there is one)."),
):
    """Generate one clip from a trained run's EMA weights (Euler flow sampler, two guidance scales)."""
    from training.sample import generate as gen

    typer.echo(
        json.dumps(
            gen(
                run,
                out,
                tags,
                narrative,
                seed,
                device=torch_device(device),
                steps=steps,
                guidance_tags=guidance_tags,
                guidance_text=guidance_text,
            )
        )
    )


def main() -> None:
    app(prog_name="pks")


if __name__ == "__main__":
    main()
