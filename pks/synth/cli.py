"""`pks synth`: synthetic anime footage with its ground truth (registered by pks.cli; the
renderer loads only inside the command)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pks.cliutil import friendly, size_option
from pks.errors import UserError


@friendly
def synth(
    out: Path = typer.Argument(..., help="Folder to write videos and truth JSON into."),
    videos: int = typer.Option(4, min=1, help="How many videos."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same footage."),
    shots: int | None = typer.Option(None, min=1, help="Shots per video (default: 6-10, random)."),
    size: str | None = typer.Option(None, help="Frame size WxH (default: varied per video)."),
    fps: str | None = typer.Option(None, help="Frame rate, e.g. 24, 24000/1001 (default: varied)."),
    crf: int | None = typer.Option(None, min=0, max=51, help="x264 quality (default: varied 16-30)."),
    family: str = typer.Option(
        "cel",
        help="Footage family: cel (flat cel shading), painted (painted "
        "backgrounds, grain, mattes, title cards; rendered independently) or limited "
        "(limited TV animation; EVALUATION ONLY: report on it, tune nothing on it).",
    ),
    damage_process: str | None = typer.Option(
        None,
        help="Also damage each video by real processes, "
        "comma-separated: corrupt,telecine,starve,mux; writes "
        "NAME.PROCESS.mp4 and its truth JSON beside it.",
    ),
):
    """Synthesise anime footage with ground-truth JSON beside each mp4."""
    from pks.synth import synthesize
    from pks.synth.processes import PROCESSES, make_damaged
    from pks.synth.video import FAMILIES

    if family not in FAMILIES:
        raise UserError(f"--family must be one of {', '.join(FAMILIES)}, got {family!r}")
    procs = [x.strip() for x in (damage_process or "").split(",") if x.strip()]
    if damage_process is not None and (not procs or set(procs) - set(PROCESSES)):
        raise UserError(
            f"--damage-process takes a comma-separated list of {', '.join(PROCESSES)}, got {damage_process!r}"
        )
    if fps is not None:
        try:
            from fractions import Fraction

            if Fraction(fps) <= 0:
                raise ValueError
        except (ValueError, ZeroDivisionError):
            raise UserError(f"--fps must be a positive number or fraction, got {fps!r}") from None
    paths = synthesize(out, videos, seed=seed, n_shots=shots, size=size_option(size), fps=fps, crf=crf, family=family)
    for p in paths:
        t = json.loads(p.with_suffix(".json").read_text())
        typer.echo(
            f"{p}  {t['width']}x{t['height']} @ {t['fps_fraction']} fps, {t['n_frames']} frames, "
            f"{len(t['shots'])} shots"
        )
        for d in make_damaged(p, procs) if procs else []:
            t = json.loads(d.with_suffix(".json").read_text())
            typer.echo(
                f"  {d.name}  {t['process']}: {len(t['damaged_frames'])} of {t['n_frames']} frames damaged, "
                f"shots {t['damaged_shots']}, {len(t['missing'])} missing"
            )
