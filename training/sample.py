"""`pks generate`: sample a clip from a trained run's EMA weights with the Euler flow sampler
and two guidance scales, one for the tags and one for the narrative:

    v = v(-, -) + g_tags * (v(tags, -) - v(-, -)) + g_text * (v(tags, text) - v(tags, -))

where `-` is the dropped condition the model learned in training (unknown tags, empty text),
at noise levels inside sample.guidance_interval; outside it both scales are 1 (v = v(tags, text)).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import taxonomy
from pks.errors import UserError
from pks.store import atomic_path
from training.checkpoint import checkpoints
from training.conditioning import fold_tags
from training.config import TrainConfig, load_run_config
from training.devices import default_device
from training.model import N_STAGES
from training.text import TextEncoder, pad_states, text_encoder_path
from training.train import build_model, run_taxonomy
from training.vae import latent_space

EXTRA_FIELDS = ("shot", "stage")


def parse_tags(spec: str, tax) -> tuple[dict[str, list[str]], str | None, int | None]:
    """'camera=pan_left,vfx=speed_lines,shot=wide,stage=2' -> (tags per axis, shot, stage).
    A bad axis or tag is a UserError that lists the valid ones."""
    tags: dict[str, list[str]] = {}
    shot, stage = None, None
    for item in filter(None, (x.strip() for x in (spec or "").split(","))):
        axis, sep, value = item.partition("=")
        axis, value = axis.strip(), value.strip()
        if not sep or not value:
            raise UserError(f"--tags items look like axis=tag, got {item!r}")
        if axis == "stage":
            if value not in {str(k) for k in range(N_STAGES)}:
                raise UserError(f"stage must be 0..{N_STAGES - 1}, got {value!r}")
            stage = int(value)
            continue
        if axis not in (*taxonomy.TAG_AXES, taxonomy.SHOT_AXIS):
            raise UserError(f"unknown axis {axis!r}; axes: {', '.join((*taxonomy.TAG_AXES, *EXTRA_FIELDS))}")
        if value not in tax.axes[axis].ids:
            raise UserError(f"unknown tag {value!r} on axis {axis}; valid: {', '.join(tax.axes[axis].ids)}")
        if axis == taxonomy.SHOT_AXIS:
            shot = value
        else:
            tags.setdefault(axis, []).append(value)
    return tags, shot, stage


def load_run(run: str | Path, device: str | torch.device | None = None):
    """A run's config, EMA model, text encoder and latent space (from its newest checkpoint), with
    the taxonomy the run was trained with. device: default the GPU when there is one."""
    device = torch.device(device or default_device())
    run = Path(run)
    done = checkpoints(run)
    if not (run / "config.yaml").is_file() or not done:
        raise UserError(f"no trained run in {run} (no checkpoint yet; run pks train first)")
    cfg = load_run_config(run)
    tax = run_taxonomy(cfg)
    model = build_model(cfg, tax)
    model.load_state_dict(torch.load(done[-1] / "ema.pt", map_location="cpu", weights_only=True))
    model.to(device).eval()
    text = TextEncoder(text_encoder_path(cfg, run), cfg.text_encoder.max_length, device)
    return (
        cfg,
        tax,
        model,
        text,
        latent_space(cfg, device, run),
        json.loads((done[-1] / "meta.json").read_text())["step"],
    )


@torch.no_grad()
def sample(
    model,
    text_encoder,
    space,
    cfg: TrainConfig,
    tags: dict[str, list[str]],
    narrative: str = "",
    shot: str | None = None,
    stage: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance_tags: float | None = None,
    guidance_text: float | None = None,
    frames: int | None = None,
    size: tuple[int, int] | None = None,
    tax=None,
    guidance_interval: tuple[float, float] | None = None,
) -> torch.Tensor:
    """One clip, uint8 [T, 3, H, W]. Axes not given are 'unknown' (the model chooses)."""
    tax = tax or run_taxonomy(cfg)
    sc, dc = cfg.sample, cfg.data
    steps = steps or sc.steps
    g_tags = sc.guidance_tags if guidance_tags is None else guidance_tags
    g_text = sc.guidance_text if guidance_text is None else guidance_text
    lo, hi = sc.guidance_interval if guidance_interval is None else guidance_interval
    shape = space.latent_shape(frames or dc.frames, tuple(size or dc.size))
    device = next(model.parameters()).device
    multi = {a: torch.zeros(3, len(tax.axes[a].ids), device=device) for a in taxonomy.TAG_AXES}
    for a, ids in tags.items():
        for tag in ids:
            multi[a][:, tax.index(a, tag)] = 1
    known = torch.zeros(3, len(taxonomy.TAG_AXES), dtype=torch.bool, device=device)
    known[1:] = torch.tensor([a in tags for a in taxonomy.TAG_AXES], device=device)
    shot_i = torch.tensor([-1] + [tax.index(taxonomy.SHOT_AXIS, shot) if shot else -1] * 2, device=device)
    stage_i = torch.tensor([-1] + [stage if stage is not None else -1] * 2, device=device)
    if not cfg.tag_channel:  # the ablation reads its tags as words
        narrative = fold_tags(narrative, tags, shot, stage)
        known[:], shot_i[:], stage_i[:] = False, -1, -1
    text, mask = pad_states(text_encoder.states(["", "", narrative]))  # none, tags only, tags + narrative
    text, mask = text.to(device), mask.to(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *shape), generator=g).to(device)
    s = cfg.train.shift
    ts = torch.linspace(1, 0, steps + 1)
    ts = s * ts / (1 + (s - 1) * ts)  # the shifted schedule training used
    for i in range(steps):
        t = ts[i].expand(3).to(device)
        v = model(x.expand(3, *shape), t, text, mask, multi, known, shot_i, stage_i)
        v_none, v_tags, v_full = v.float().chunk(3)
        if lo <= ts[i] <= hi:
            guided = v_none + g_tags * (v_tags - v_none) + g_text * (v_full - v_tags)
        else:
            guided = v_full
        x = x + (ts[i + 1] - ts[i]).item() * guided
    return space.decode(x)[0]


def generate(
    run: str | Path,
    out: str | Path,
    tags_spec: str = "",
    narrative: str = "",
    seed: int = 0,
    device: str | None = None,
    **kw,
) -> dict:
    """Write one generated clip to `out` (mp4; under a temporary name, renamed when whole).
    Returns what was made."""
    from pks.videoio import Mp4Writer

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    run = Path(run)
    cfg_path = run / "config.yaml"
    tax = run_taxonomy(load_run_config(run)) if cfg_path.is_file() else taxonomy.load(1)
    tags, shot, stage = parse_tags(tags_spec, tax)  # a typo fails before any model loads
    cfg, tax, model, text, space, step = load_run(run, device)
    video = sample(model, text, space, cfg, tags, narrative, shot, stage, seed, tax=tax, **kw)
    t, _, h, w = video.shape
    with atomic_path(out) as tmp:  # a killed run leaves no half clip at out
        writer = Mp4Writer(tmp, cfg.data.fps, w, h, crf=12, fmt="mp4")
        try:
            for frame in video.permute(0, 2, 3, 1).numpy():
                writer.write(frame)
        finally:
            writer.close()
    made = {
        "out": str(out),
        "frames": t,
        "size": [h, w],
        "fps": cfg.data.fps,
        "checkpoint_step": step,
        "run": str(run),
        "tags": tags,
        "shot": shot,
        "stage": stage,
        "narrative": narrative,
        "seed": seed,
    }
    Path(out).with_suffix(".json").write_text(json.dumps(made, indent=1))  # what was asked (the report shows it)
    return made
