"""The `pks` command line (typer). User mistakes end in one clear line and a non-zero exit."""
from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer

from pks.errors import UserError

app = typer.Typer(help="PKS: anime-native video curation, captioning and curriculum sharding.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
tax_app = typer.Typer(help="Inspect the taxonomy and validate captions against it.", no_args_is_help=True)
app.add_typer(tax_app, name="taxonomy")
judge_app = typer.Typer(help="The Judge: a reward model that tells art from failure.", no_args_is_help=True)
app.add_typer(judge_app, name="judge")
audit_app = typer.Typer(help="The annotators' audit workbench: users, agreement, corrections back into the run.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def friendly(fn):
    """A user mistake (UserError) becomes `pks: error: ...` on stderr and exit code 2. Anything
    else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except UserError as e:
            typer.echo(f"pks: error: {e}", err=True)
            raise typer.Exit(2)
    return wrapper


STORAGE_OPTIONS_HELP = ("fsspec options for an object-store OUT (and inputs of its protocol), as JSON, e.g. "
                        "'{\"endpoint_url\": \"http://host:9000\"}'; default: the client's environment (AWS_*).")


def local_out(out: Path | str) -> Path:
    """OUT for the commands that work on a local folder only: a URL is a one-line error (a
    Path argument has already folded s3://b/x into s3:/b/x)."""
    url = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):/+(.*)", str(out))
    if url:
        raise UserError(f"this command needs a local OUT folder, got {url[1]}://{url[2]} (pks curate and pks shard "
                        "work on object storage; copy the run down first, e.g. aws s3 sync)")
    return Path(out)


def need_manifest(out: Path) -> Path:
    """OUT/manifest.parquet, or a one-line error when OUT holds no curated run."""
    manifest = local_out(out) / "manifest.parquet"
    if not manifest.exists():
        raise UserError(f"no manifest in {out} (run pks curate first)")
    return manifest


def need_audit(out: Path) -> None:
    """A one-line error when OUT holds no curated run or no audit yet."""
    need_manifest(out)
    if not (out / "audit" / "audit.db").exists():
        raise UserError(f"no audit in {out} (start with pks audit add-user)")


def load_taxonomy(version: Optional[int]):
    """The taxonomy the user named (a version that is not shipped is their mistake)."""
    import taxonomy

    if version is not None and version not in taxonomy.available_versions():
        raise UserError(f"no taxonomy v{version}; shipped: {taxonomy.available_versions()}")
    return taxonomy.load(version)


def torch_device(name: Optional[str]):
    """--device: None (the GPU when there is one), or a torch device that exists here."""
    if name is None:
        return None
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device must be cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise UserError(f"--device {name}: no such GPU here")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    return device


def _size(text: Optional[str]):
    if not text:
        return None
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like 640x360, got {text!r}") from None
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise UserError(f"--size needs positive even numbers, got {text!r}")
    return w, h


@app.command()
@friendly
def synth(out: Path = typer.Argument(..., help="Folder to write videos and truth JSON into."),
          videos: int = typer.Option(4, min=1, help="How many videos."),
          seed: int = typer.Option(0, help="Random seed; the same seed gives the same footage."),
          shots: Optional[int] = typer.Option(None, min=1, help="Shots per video (default: 6-10, random)."),
          size: Optional[str] = typer.Option(None, help="Frame size WxH (default: varied per video)."),
          fps: Optional[str] = typer.Option(None, help="Frame rate, e.g. 24, 24000/1001 (default: varied)."),
          crf: Optional[int] = typer.Option(None, min=0, max=51, help="x264 quality (default: varied 16-30)."),
          family: str = typer.Option("cel", help="Footage family: cel (flat cel shading) or painted (painted "
                                                 "backgrounds, grain, mattes, title cards; rendered independently).")):
    """Synthesise anime footage with ground-truth JSON beside each mp4."""
    from pks.synth import synthesize
    from pks.synth.video import FAMILIES

    if family not in FAMILIES:
        raise UserError(f"--family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if fps is not None:
        try:
            from fractions import Fraction
            if Fraction(fps) <= 0:
                raise ValueError
        except (ValueError, ZeroDivisionError):
            raise UserError(f"--fps must be a positive number or fraction, got {fps!r}") from None
    paths = synthesize(out, videos, seed=seed, n_shots=shots, size=_size(size), fps=fps, crf=crf, family=family)
    for p in paths:
        t = json.loads(p.with_suffix(".json").read_text())
        typer.echo(f"{p}  {t['width']}x{t['height']} @ {t['fps_fraction']} fps, {t['n_frames']} frames, "
                   f"{len(t['shots'])} shots")


@tax_app.command("show")
@friendly
def tax_show(axis: Optional[str] = typer.Option(None, help="Only this axis."),
             version: Optional[int] = typer.Option(None, help="Taxonomy version (default: newest).")):
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
def tax_schema(version: Optional[int] = typer.Option(None, help="Taxonomy version (default: newest).")):
    """Print the caption JSON Schema generated from the taxonomy."""
    typer.echo(json.dumps(load_taxonomy(version).json_schema(), indent=2))


@tax_app.command("validate")
@friendly
def tax_validate(file: Path = typer.Argument(..., help="A caption JSON object, a JSON list of them, or JSONL."),
                 version: Optional[int] = typer.Option(None, help="Taxonomy version (default: newest).")):
    """Validate captions against the taxonomy; exit 1 if any is invalid."""
    import taxonomy

    tax = load_taxonomy(version)
    if not file.exists():
        raise UserError(f"no such file: {file}")
    text = file.read_text()
    try:
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
        labels = [f"item {i}" for i in range(len(items))] if isinstance(data, list) else [str(file)]
    except json.JSONDecodeError:
        items, labels = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{file}:{n}: not JSON ({e.msg})") from None
                labels.append(f"line {n}")
    bad = 0
    for label, item in zip(labels, items):
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


@app.command()
@friendly
def shots(video: Path = typer.Argument(..., help="A video file."),
          detector: str = typer.Option("anime", help="anime | transnetv2 | hybrid | adaptive | content."),
          out: Optional[Path] = typer.Option(None, help="Write the JSON here instead of stdout."),
          min_shot_s: float = typer.Option(0.0, help="Drop shots shorter than this."),
          max_shot_s: Optional[float] = typer.Option(None, help="Split shots longer than this."),
          trim_frames: int = typer.Option(0, min=0, help="Frames to drop at each end of every shot.")):
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
    doc = {"video": str(video), "fps": frames.fps, "n_frames": len(frames.rgb), "detector": detector,
           "shots": [s.to_dict() for s in shots_]}
    text = json.dumps(doc, indent=1)
    if out:
        out.write_text(text + "\n")
        typer.echo(f"{len(shots_)} shot(s) -> {out}", err=True)
    else:
        typer.echo(text)


@app.command()
@friendly
def curate(input: str = typer.Argument(..., help="Folder, glob, list file (.txt) or fsspec URL of videos."),
           out: str = typer.Argument(..., help="Output folder or object-store URL, e.g. s3://bucket/run "
                                                "(manifest.parquet, clips/, parts/)."),
           config: Optional[Path] = typer.Option(None, help="Job config YAML (see pipelines/configs/curate.yaml)."),
           detector: Optional[str] = typer.Option(None, help="Shot detector (overrides split.detector)."),
           min_shot_s: Optional[float] = typer.Option(None, help="Overrides split.min_shot_s."),
           max_shot_s: Optional[float] = typer.Option(None, help="Overrides split.max_shot_s."),
           no_clips: bool = typer.Option(False, "--no-clips", help="Only the manifest, no clip files (and no shards)."),
           no_shard: bool = typer.Option(False, "--no-shard", help="Stop before writing shards (shard.enabled)."),
           captioner: Optional[str] = typer.Option(None, help="auto | signals | openai | vllm | transformers | none (overrides caption.captioner)."),
           endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible VLM server, e.g. http://host:8000/v1."),
           model: Optional[str] = typer.Option(None, help="Served model name (openai) or model folder (vllm, transformers)."),
           address: Optional[str] = typer.Option(None, help="Ray cluster address (default: local, or RAY_ADDRESS)."),
           num_cpus: Optional[int] = typer.Option(None, help="Local Ray CPUs."),
           retry_errors: bool = typer.Option(True, "--retry-errors/--no-retry-errors",
                                             help="Retry the error records of finished videos (the failed clips only)."),
           storage_options: Optional[str] = typer.Option(None, help=STORAGE_OPTIONS_HELP)):
    """Run the curation job on Ray Data: ingest, split into shots, cut clips, write OUT/manifest.parquet."""
    from pipelines.curate import run
    from pks.config import load_config
    from pks.store import parse_options

    cfg = load_config(config, {"ray.address": address, "ray.num_cpus": num_cpus, "split.detector": detector,
                               "split.min_shot_s": min_shot_s, "split.max_shot_s": max_shot_s,
                               "clips.write": False if no_clips else None, "caption.captioner": captioner,
                               "shard.enabled": False if no_shard else None,
                               "caption.endpoint": endpoint, "caption.model": model})
    summary = run(input, out, cfg, progress=lambda m: typer.echo(m, err=True), retry_errors=retry_errors,
                  storage_options=parse_options(storage_options))
    typer.echo(json.dumps(summary))


@app.command()
@friendly
def caption(out: Path = typer.Argument(..., help="A curated output folder (with parts/ and clips/)."),
            config: Optional[Path] = typer.Option(None, help="Job config YAML."),
            captioner: Optional[str] = typer.Option(None, help="auto | signals | openai | vllm | transformers."),
            endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible VLM server, e.g. http://host:8000/v1."),
            model: Optional[str] = typer.Option(None, help="Served model name (openai) or model folder (vllm, transformers)."),
            concurrency: Optional[int] = typer.Option(None, help="Requests in flight.")):
    """Caption a run's ok clips in place (resumable: cached captions are reused)."""
    from pipelines.curate import caption_run
    from pks.config import load_config

    if not (local_out(out) / "parts").is_dir():
        raise UserError(f"no curated run in {out} (run pks curate first)")
    cfg = load_config(config, {"caption.captioner": captioner, "caption.endpoint": endpoint,
                               "caption.model": model, "caption.concurrency": concurrency})
    if cfg["caption"]["captioner"] == "none":
        raise UserError("captioner 'none' captions nothing; choose signals, openai, vllm or transformers")
    typer.echo(json.dumps(caption_run(out, cfg, progress=lambda m: typer.echo(m, err=True))))


@app.command("serve-vlm")
@friendly
def serve_vlm(model: str = typer.Option("Qwen/Qwen2.5-VL-7B-Instruct", help="Model to serve."),
              port: int = typer.Option(8000),
              frames: int = typer.Option(4, help="Images per request (caption.frames)."),
              start: bool = typer.Option(False, help="Start it (needs vllm installed) instead of printing.")):
    """The recommended `vllm serve` command for captioning (prefix caching for the fixed
    taxonomy prompt, structured outputs for the JSON Schema, room for the clip's frames)."""
    import shlex
    import subprocess

    cmd = ["vllm", "serve", model, "--port", str(port), "--max-model-len", "16384",
           "--limit-mm-per-prompt", json.dumps({"image": frames}), "--enable-prefix-caching",
           "--structured-outputs-config", json.dumps({"backend": "xgrammar"}),
           "--mm-processor-kwargs", json.dumps({"max_pixels": 256 * 28 * 28})]
    line = " ".join(shlex.quote(c) for c in cmd)
    if not start:
        typer.echo(line)
        typer.echo(f"# then: pks curate IN OUT --captioner openai --endpoint http://HOST:{port}/v1 --model {model}",
                   err=True)
        return
    try:
        raise typer.Exit(subprocess.call(cmd))
    except FileNotFoundError:
        raise UserError("vllm is not installed here (it needs a GPU; see pks serve-vlm without --start)") from None


@app.command()
@friendly
def calibrate(out: Path = typer.Argument(..., help="A curated output folder (with manifest.parquet)."),
              config: Optional[Path] = typer.Option(None, help="Write the thresholds into this job config YAML."),
              apply: bool = typer.Option(True, help="Re-stage the run's records with the new thresholds.")):
    """Set curriculum thresholds from the deformation quartiles of a run's ok clips."""
    import pyarrow.parquet as pq
    import yaml

    from annotators.signals.curriculum import calibrate as quartiles
    from pipelines.curate import restage
    from pks.config import load_config

    manifest = need_manifest(out)
    rows = pq.read_table(manifest, columns=["status", "deformation_score"]).to_pylist()
    try:
        thresholds = quartiles([r["deformation_score"] for r in rows if r["status"] == "ok"])
    except ValueError as e:  # too few analysed clips in this run
        raise UserError(f"{out}: {e}") from None
    typer.echo(f"curriculum.deformation: {thresholds}")
    if config:
        doc = (yaml.safe_load(config.read_text()) or {}) if config.exists() else {}
        doc.setdefault("curriculum", {})["deformation"] = thresholds
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        typer.echo(f"written to {config}")
    if apply:
        cfg = load_config(config if config and config.exists() else None, {"curriculum.deformation": thresholds})
        per_stage = restage(out, cfg)
        typer.echo("clips per stage: " + ", ".join(f"{k}: {v}" for k, v in per_stage.items()))
        typer.echo(f"stages changed: rerun `pks shard {out}` to rewrite the shards")


@app.command()
@friendly
def shard(out: str = typer.Argument(..., help="A curated output folder or object-store URL (with manifest.parquet "
                                           "and clips/)."),
          config: Optional[Path] = typer.Option(None, help="Job config YAML (the shard section)."),
          max_samples: Optional[int] = typer.Option(None, help="Samples per shard (shard.max_samples)."),
          max_bytes: Optional[int] = typer.Option(None, help="Clip bytes per shard (shard.max_bytes)."),
          val_fraction: Optional[float] = typer.Option(None, help="Share of source videos held out."),
          seed: Optional[int] = typer.Option(None, help="Split and shuffle seed."),
          num_cpus: Optional[int] = typer.Option(None, help="Local Ray CPUs."),
          storage_options: Optional[str] = typer.Option(None, help=STORAGE_OPTIONS_HELP)):
    """Write OUT/shards/{split}/stage-{k}/shard-NNNNNN.tar and OUT/shards/index.parquet (resumable)."""
    from pipelines.shard import shard_run
    from pks.config import load_config
    from pks.store import as_store, parse_options, storage_errors

    store = as_store(out, parse_options(storage_options))
    with storage_errors(out):
        found = store.exists("manifest.parquet")
    if not found:
        raise UserError(f"no manifest in {out} (run pks curate first)")
    cfg = load_config(config, {"shard.max_samples": max_samples, "shard.max_bytes": max_bytes,
                               "shard.val_fraction": val_fraction, "shard.seed": seed, "ray.num_cpus": num_cpus})
    typer.echo(json.dumps(shard_run(store, cfg, progress=lambda m: typer.echo(m, err=True))))


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
def train(source: str = typer.Argument(..., help="A curate OUT folder or its shards/ (or `encode`, see below)."),
          second: Optional[str] = typer.Argument(None, help="With `encode`: the shards to encode."),
          config: str = typer.Option("tiny", help="tiny | small | base (training/configs/) or a YAML file."),
          steps: Optional[int] = typer.Option(None, min=1, help="Training steps (train.steps)."),
          out: Path = typer.Option(..., help="The run folder (config, checkpoints, metrics.jsonl), or the latent "
                                             "shards folder with `encode`."),
          resume: bool = typer.Option(False, help="Continue the run in --out from its newest checkpoint."),
          batch_size: Optional[int] = typer.Option(None, min=1, help="Global batch size (data.batch_size)."),
          no_tag_channel: bool = typer.Option(False, "--no-tag-channel",
                                              help="Ablation: fold the tags into the narrative instead."),
          ray_workers: Optional[int] = typer.Option(None, min=1, help="Train on Ray with this many workers."),
          gpu: bool = typer.Option(False, help="With --ray-workers: one GPU per worker."),
          stage: str = typer.Option("sft", help="sft (flow matching) or dpo (the preference stage, from --init)."),
          init: Optional[Path] = typer.Option(None, help="With --stage dpo: the trained run to start from."),
          judge: Optional[Path] = typer.Option(None, help="With --stage dpo: the Judge that ranks samples."),
          allow_stale: bool = typer.Option(False, "--allow-stale", help="Train on shards whose records changed "
                                                                        "after pks shard (default: refuse them)."),
          device: Optional[str] = typer.Option(None, help="With `encode`: cpu, cuda, cuda:N (default: the GPU "
                                                         "when there is one).")):
    """Train the dual-channel generator on curriculum shards: `pks train SHARDS_OR_OUT --config tiny
    --steps N --out RUN [--resume]`. Under torchrun it runs data parallel (DDP, or FSDP2 with
    train.parallel: fsdp). `pks train encode SHARDS --config C --out LATENTS` precomputes VAE
    latents and text embeddings into latent shards that `pks train LATENTS ...` reads.
    `pks train SHARDS --stage dpo --init RUN --judge judge.pt --steps N --out RUN_DPO` runs the
    preference stage (Diffusion-DPO; its settings are the config's `dpo` section)."""
    from training.train import load_train_config, train as run_train, train_ray

    if stage not in ("sft", "dpo"):
        raise UserError(f"--stage must be sft or dpo, got {stage!r}")
    for where in (source, second, out):
        if where:
            local_out(where)
    if stage == "dpo":
        from training.dpo import dpo_config, train_dpo

        if init is None:
            raise UserError("--stage dpo needs --init RUN (a pks train run to start from)")
        if ray_workers or second or no_tag_channel:
            raise UserError("--stage dpo runs in one process on raw shards (no --ray-workers, encode or ablation)")
        base = load_train_config(config).get("dpo")
        if not base:
            raise UserError(f"training config {config} has no dpo section (see training/configs/tiny.yaml)")
        dpo = dpo_config(base, {"steps": steps, "batch": batch_size})
        typer.echo(json.dumps(train_dpo(source, init, judge, out, dpo, resume=resume)))
        return
    if init or judge:
        raise UserError("--init and --judge belong to --stage dpo")
    cfg = load_train_config(config, {"train.steps": steps, "data.batch_size": batch_size,
                                     "tag_channel": False if no_tag_channel else None})
    if source == "encode":
        from training.encode import encode_shards

        if not second:
            raise UserError("usage: pks train encode SHARDS_OR_OUT --config C --out LATENTS")
        typer.echo(json.dumps(encode_shards(second, out, cfg, progress=lambda m: typer.echo(m, err=True),
                                            device=torch_device(device))))
        return
    if second:
        raise UserError(f"unexpected argument {second!r} (only `pks train encode` takes two)")
    if ray_workers:
        typer.echo(json.dumps(train_ray(source, out, cfg, ray_workers, gpu, resume, allow_stale)))
        return
    metrics = run_train(source, out, cfg, resume=resume, allow_stale=allow_stale)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary
        typer.echo(json.dumps(metrics))


@app.command()
@friendly
def generate(run: Path = typer.Argument(..., help="A training run folder."),
             tags: str = typer.Option("", help="axis=tag,... e.g. camera=pan_left,motion=combat_dash,shot=wide,stage=2"),
             narrative: str = typer.Option("", help="What happens (empty: tags only)."),
             seed: int = typer.Option(0),
             out: Path = typer.Option(Path("clip.mp4"), help="The mp4 to write."),
             steps: Optional[int] = typer.Option(None, min=1, help="Sampler steps (sample.steps)."),
             guidance_tags: Optional[float] = typer.Option(None, help="Tag guidance scale."),
             guidance_text: Optional[float] = typer.Option(None, help="Narrative guidance scale."),
             device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N (default: the GPU when there "
                                                             "is one).")):
    """Generate one clip from a trained run's EMA weights (Euler flow sampler, two guidance scales)."""
    from training.sample import generate as gen

    typer.echo(json.dumps(gen(run, out, tags, narrative, seed, device=torch_device(device), steps=steps,
                              guidance_tags=guidance_tags, guidance_text=guidance_text)))


@judge_app.command("train")
@friendly
def judge_train(outs: list[Path] = typer.Argument(..., help="Curated output folders (manifest.parquet, clips/)."),
                dest: Path = typer.Option(..., "--out", help="Where to write the Judge (e.g. judge.pt)."),
                epochs: int = typer.Option(30, help="Passes over the training examples."),
                config: Optional[Path] = typer.Option(None, help="Job config YAML (its analyse section)."),
                backbone: str = typer.Option("cnn", help="cnn, or a local OpenCLIP folder (open_clip_config.json "
                                                         "and weights) whose frozen image tower embeds the frames.")):
    """Train the Judge on curated runs: ok clips (every stage) against flagged clips and failure
    copies; validation on held-out source videos."""
    from pks.config import load_config
    from training.judge import JudgeConfig, auc, collect, save, score, split, train

    for out in outs:
        need_manifest(out)
    if backbone != "cnn" and not (Path(backbone) / "open_clip_config.json").is_file():
        raise UserError(f"--backbone must be cnn or an OpenCLIP folder with open_clip_config.json, got {backbone}")
    cfg = JudgeConfig(epochs=epochs, backbone=backbone if backbone == "cnn" else str(Path(backbone).resolve()))
    ex = collect(outs, cfg, load_config(config), progress=typer.echo)
    if len(set(ex.labels)) < 2:
        raise UserError("the runs hold no usable clips (need ok clips with clip files)")
    tr, va = split(ex, cfg)
    model = train(tr, va if va.labels else None, cfg, progress=typer.echo)
    save(model, dest)
    if va.labels:
        typer.echo(f"validation AUC {auc(va.labels, score(model, va)):.3f} on {len(va.labels)} examples "
                   f"from {len(set(va.videos))} held-out videos")
    typer.echo(f"judge -> {dest}")


@judge_app.command("score")
@friendly
def judge_score(out: Path = typer.Argument(..., help="A curated output folder."),
                judge: Path = typer.Option(..., help="A Judge from pks judge train."),
                config: Optional[Path] = typer.Option(None, help="Job config YAML.")):
    """Write judge_score into every analysed record (parts and manifest); then shard.min_judge_score
    can keep low scorers out of the shards (rerun pks shard)."""
    from pks.config import load_config
    from training.judge import load, score_run

    need_manifest(out)
    if not judge.exists():
        raise UserError(f"no such Judge file: {judge}")
    counts = score_run(out, load(judge), load_config(config), progress=typer.echo)
    typer.echo(f"scored {counts['scored']} clips ({counts['skipped']} without analysis or clip file)")
    if counts["scored"]:
        typer.echo(f"rerun `pks shard {out}` to rewrite the shards")  # their records hold the old JSON


@audit_app.command("add-user")
@friendly
def audit_add_user(out: Path = typer.Argument(..., help="A curated output folder."),
                   name: str = typer.Argument(..., help="Login name."),
                   role: str = typer.Option("annotator", help="annotator (labels) or lead (adjudicates, manages gold)")):
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
def audit_serve(out: Path = typer.Argument(..., help="A curated output folder (manifest.parquet and clips/)."),
                host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
                port: int = typer.Option(8765, help="Port."),
                overlap: int = typer.Option(2, help="Annotators per clip (agreement needs 2 or more)."),
                strategy: str = typer.Option("uncertain", help="uncertain | stratified | random"),
                gold_rate: float = typer.Option(0.1, help="Share of each annotator's clips that are gold clips."),
                idle_hours: float = typer.Option(12.0, help="A session ends after this many hours without a "
                                                 "request (and 7 days after login in any case).")):
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
    uvicorn.run(create_app(out, queue, host=host, session_idle=idle_hours * 3600), host=host, port=port,
                log_level="warning")


@audit_app.command("revoke")
@friendly
def audit_revoke(out: Path = typer.Argument(..., help="A curated output folder with an audit."),
                 name: str = typer.Argument(..., help="The user to lock out.")):
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
def audit_export(out: Path = typer.Argument(..., help="A curated output folder."),
                 format: str = typer.Option("label-studio", "--format", help="label-studio"),
                 dest: Optional[Path] = typer.Option(None, "--out", help="Folder for config.xml and tasks.json "
                                                     "(default OUT/audit/label-studio)."),
                 video_prefix: str = typer.Option("/data/local-files/?d=clips/",
                                                  help="How Label Studio reaches OUT/clips/ (URL prefix).")):
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
def audit_import(out: Path = typer.Argument(..., help="A curated output folder."),
                 file: Path = typer.Argument(..., help="A Label Studio JSON export.")):
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
def audit_stats(out: Path = typer.Argument(..., help="A curated output folder with an audit."),
                as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON.")):
    """Agreement per axis and tag (Cohen's kappa, Krippendorff's alpha), model vs human per tag,
    most confused tags, accuracy on gold clips."""
    from annotators.audit.stats import audit_stats as compute, format_stats
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
def audit_apply(out: Path = typer.Argument(..., help="A curated output folder with an audit."),
                config: Optional[Path] = typer.Option(None, help="Job config YAML.")):
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
    typer.echo(f"captions written: {counts['captions']}, clips rejected as failures: {counts['rejected']}, "
               f"already applied: {counts['unchanged']}")
    if counts["captions"] or counts["rejected"]:
        typer.echo(f"rerun `pks shard {out}` to rewrite the shards")


def main() -> None:
    app(prog_name="pks")


if __name__ == "__main__":
    sys.exit(main())
