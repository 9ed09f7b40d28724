"""`pks judge ...`: train the Judge and score a run with it (mounted by pks.cli; torch loads
only inside the commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from pks.cliutil import friendly, need_manifest
from pks.errors import UserError

judge_app = typer.Typer(help="The Judge: a reward model that tells art from failure.", no_args_is_help=True)


@judge_app.command("train")
@friendly
def judge_train(
    outs: list[Path] = typer.Argument(..., help="Curated output folders (manifest.parquet, clips/)."),
    dest: Path = typer.Option(..., "--out", help="Where to write the Judge (e.g. judge.pt)."),
    epochs: int = typer.Option(30, help="Passes over the training examples."),
    config: Path | None = typer.Option(None, help="Job config YAML (its analyse section)."),
    backbone: str = typer.Option(
        "cnn",
        help="cnn, or a local OpenCLIP folder (open_clip_config.json "
        "and weights) whose frozen image tower embeds the frames.",
    ),
):
    """Train the Judge on curated runs: ok clips (every stage) against flagged clips and failure
    copies; validation on held-out source videos."""
    from pks.config import load_config
    from training.judge import JudgeConfig, train_judge

    for out in outs:
        need_manifest(out)
    if backbone != "cnn" and not (Path(backbone) / "open_clip_config.json").is_file():
        raise UserError(f"--backbone must be cnn or an OpenCLIP folder with open_clip_config.json, got {backbone}")
    cfg = JudgeConfig(epochs=epochs, backbone=backbone if backbone == "cnn" else str(Path(backbone).resolve()))
    got = train_judge(outs, dest, cfg, load_config(config))
    if got["val_auc"] is not None:
        typer.echo(
            f"validation AUC {got['val_auc']:.3f} on {got['val_examples']} examples "
            f"from {got['val_videos']} held-out videos"
        )
    typer.echo(f"judge -> {dest}")


@judge_app.command("score")
@friendly
def judge_score(
    out: Path = typer.Argument(..., help="A curated output folder."),
    judge: Path = typer.Option(..., help="A Judge from pks judge train."),
    config: Path | None = typer.Option(None, help="Job config YAML."),
):
    """Write judge_score into every analysed record (parts and manifest); then shard.min_judge_score
    can keep low scorers out of the shards (rerun pks shard)."""
    from pks.config import load_config
    from training.judge import load, score_run

    need_manifest(out)
    if not judge.exists():
        raise UserError(f"no such Judge file: {judge}")
    counts = score_run(out, load(judge), load_config(config))
    typer.echo(f"scored {counts['scored']} clips ({counts['skipped']} without analysis or clip file)")
    if counts["scored"]:
        typer.echo(f"rerun `pks shard {out}` to rewrite the shards")  # their records hold the old JSON
