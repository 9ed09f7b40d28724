"""`pks train ...`: train the generator (`pks train SOURCE ...`, the group's default command) and
precompute latent shards (`pks train encode ...`); mounted by pks.cli, torch loads only inside
the commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pks.cliutil import (
    DEFAULT_COMMAND,
    DefaultCommand,
    DefaultCommandGroup,
    friendly,
    local_out,
    torch_device,
)

CONFIG_HELP = "tiny | tiny_pixel | small | base (training/configs/) or a YAML file."

train_app = typer.Typer(
    cls=DefaultCommandGroup,
    no_args_is_help=True,
    subcommand_metavar="SHARDS_OR_OUT|encode [ARGS]...",
    help="Train the dual-channel generator on curriculum shards: `pks train SHARDS_OR_OUT --config tiny "
    "--steps N --out RUN [--resume]` (every option: `pks train SHARDS_OR_OUT --help`). Under torchrun it "
    "runs data parallel (DDP, or FSDP2 with train.parallel: fsdp). `pks train SHARDS --stage dpo --init RUN "
    "--judge judge.pt --steps N --out RUN_DPO` runs the preference stage (Diffusion-DPO; its settings are "
    "the config's `dpo` section). `pks train encode SHARDS --config C --out LATENTS` precomputes latent "
    "shards that `pks train LATENTS ...` reads.",
)


@train_app.command(DEFAULT_COMMAND, hidden=True, cls=DefaultCommand)
@friendly
def train(
    source: str = typer.Argument(..., help="A curate OUT folder or its shards/ (raw or latent)."),
    config: str = typer.Option("tiny", help=CONFIG_HELP),
    steps: int | None = typer.Option(None, min=1, help="Training steps (train.steps)."),
    out: Path = typer.Option(..., help="The run folder (config, checkpoints, metrics.jsonl)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its newest checkpoint."),
    batch_size: int | None = typer.Option(None, min=1, help="Global batch size (data.batch_size)."),
    no_tag_channel: bool = typer.Option(
        False, "--no-tag-channel", help="Ablation: fold the tags into the narrative instead."
    ),
    ray_workers: int | None = typer.Option(None, min=1, help="Train on Ray with this many workers."),
    gpu: bool = typer.Option(False, help="With --ray-workers: one GPU per worker."),
    stage: str = typer.Option("sft", help="sft (flow matching) or dpo (the preference stage, from --init)."),
    init: Path | None = typer.Option(None, help="With --stage dpo: the trained run to start from."),
    judge: Path | None = typer.Option(None, help="With --stage dpo: the Judge that ranks samples."),
    allow_stale: bool = typer.Option(
        False, "--allow-stale", help="Train on shards whose records changed after pks shard (default: refuse them)."
    ),
    sets: list[str] = typer.Option(
        [],
        "--set",
        help="KEY=VALUE: one config value (a dotted key, a YAML "
        "value), e.g. latent.steps=300 or latent.path=RUN1/vae "
        "(reuse a run's VAE); repeatable.",
    ),
):
    """Train the dual-channel generator on curriculum shards (one process, torchrun's processes,
    Ray Train with --ray-workers, or the preference stage with --stage dpo)."""
    from training.devices import is_main_process
    from training.jobs import train_job

    local_out(source)
    local_out(out)
    metrics = train_job(
        source,
        out,
        config,
        steps=steps,
        batch_size=batch_size,
        tag_channel=not no_tag_channel,
        stage=stage,
        init=init,
        judge=judge,
        ray_workers=ray_workers,
        gpu=gpu,
        resume=resume,
        allow_stale=allow_stale,
        sets=sets,
    )
    if is_main_process():  # under torchrun, one summary
        typer.echo(json.dumps(metrics))


@train_app.command("encode")
@friendly
def encode(
    shards: str = typer.Argument(..., help="A curate OUT folder or its shards/."),
    config: str = typer.Option("tiny", help=CONFIG_HELP),
    out: Path = typer.Option(..., help="The latent shards folder to write."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:N (default: the GPU when there is one)."),
):
    """Precompute VAE latents and text states into latent shards that `pks train LATENTS ...`
    reads (resumable: shards whose source and settings are unchanged are kept)."""
    from training.config import load_train_config
    from training.encode import encode_shards

    local_out(shards)
    local_out(out)
    typer.echo(json.dumps(encode_shards(shards, out, load_train_config(config), device=torch_device(device))))
