"""`pks shots`: one video's shots as JSON (registered by pks.cli; the detectors load only inside
the command)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pks.cliutil import friendly
from pks.errors import UserError


@friendly
def shots(
    video: Path = typer.Argument(..., help="A video file."),
    detector: str = typer.Option("anime", help="anime | transnetv2 | hybrid | adaptive | content."),
    out: Path | None = typer.Option(None, help="Write the JSON here instead of stdout."),
    min_shot_s: float = typer.Option(0.0, help="Drop shots shorter than this."),
    max_shot_s: float | None = typer.Option(None, help="Split shots longer than this."),
    trim_frames: int = typer.Option(0, min=0, help="Frames to drop at each end of every shot."),
):
    """Detect the shots of one video: JSON with shots [start_frame, end_frame) and transition_in."""
    from annotators.shots import detect_video, get_detector, shots_from_boundaries
    from pks.probe import ProbeError, probe

    if not video.exists():
        raise UserError(f"no such file: {video}")
    try:
        probe(video, video_id="-")
    except ProbeError as e:
        raise UserError(f"{video}: {e}") from None
    try:
        det = get_detector(detector)
    except ValueError as e:
        raise UserError(str(e)) from None
    bounds, frames = detect_video(str(video), det)
    shots_ = shots_from_boundaries(bounds, len(frames.rgb), frames.fps, min_shot_s, max_shot_s, trim_frames)
    doc = {
        "video": str(video),
        "fps": frames.fps,
        "n_frames": len(frames.rgb),
        "detector": detector,
        "shots": [s.to_dict() for s in shots_],
    }
    text = json.dumps(doc, indent=1)
    if out:
        out.write_text(text + "\n")
        typer.echo(f"{len(shots_)} shot(s) -> {out}", err=True)
    else:
        typer.echo(text)
