"""`pks stats OUT` and `pks report OUT`: the numbers a data engineer judges a run by, in the
terminal and as one self-contained HTML page (plots and contact sheets inlined as PNG)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import taxonomy
from pks.errors import UserError
from pks.jobconfig import JobConfig
from pks.store import atomic_path, jsonl_entries

COLUMNS = [
    "clip_id",
    "video_id",
    "status",
    "error",
    "quality_flags",
    "camera_motion",
    "cadence",
    "deformation_score",
    "curriculum_stage",
    "caption",
    "caption_source",
    "end_frame",
    "start_frame",
]
DEFORMATION_BINS = np.linspace(0, 1, 11)
CADENCE_BINS = np.array([0.5, 1.5, 2.5, 3.5, 4.5, 8.5])
JUDGE_BINS = np.linspace(0, 1, 11)


def reason(error: str) -> str:
    """A rejection or error reason without clip-specific numbers, so equal causes group."""
    head = error.split(" (", 1)[0]
    return re.sub(r"\d+(\.\d+)?", "#", head)[:120] or "(none given)"


def run_stats(out: Path) -> dict:
    """Every number of the report, from OUT/manifest.parquet, shards/index.parquet, runs.jsonl."""
    out = Path(out)
    if not (out / "manifest.parquet").exists():
        raise UserError(f"no manifest in {out} (run pks curate first)")
    names = pq.read_schema(out / "manifest.parquet").names
    rows = pq.read_table(
        out / "manifest.parquet", columns=COLUMNS + ["judge_score"] * ("judge_score" in names)
    ).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    tax = taxonomy.load()
    tags: dict[str, Counter[str]] = {a: Counter() for a in (*taxonomy.TAG_AXES, "shot")}
    for r in ok:
        for a in taxonomy.TAG_AXES:
            tags[a].update((r["caption"] or {}).get(a) or [])
        if r["caption"] and r["caption"].get("shot"):
            tags["shot"][r["caption"]["shot"]] += 1
    deform = [r["deformation_score"] for r in ok if r["deformation_score"] is not None]
    cadence = [r["cadence"] for r in ok if r["cadence"] is not None]
    stats = {
        "clips": len(rows),
        "videos": len({r["video_id"] for r in rows}),
        "status": dict(Counter(r["status"] for r in rows)),
        "reasons": {
            s: dict(Counter(reason(r["error"]) for r in rows if r["status"] == s).most_common(12))
            for s in ("rejected", "error")
        },
        "quality_flags": dict(Counter(f for r in rows for f in r["quality_flags"]).most_common()),
        "stage_ok": {k: sum(r["curriculum_stage"] == k for r in ok) for k in range(4)},
        "camera_mix": dict(Counter(t for r in ok for t in r["camera_motion"]).most_common()),
        "tags": {a: {t: c[t] for t in (tax.axes[a].ids if a in tax.axes else []) if c[t]} for a, c in tags.items()},
        "caption_source": dict(Counter(r["caption_source"].split("|", 1)[0] for r in ok if r["caption_source"])),
        "deformation_hist": np.histogram(deform, DEFORMATION_BINS)[0].tolist(),
        "cadence_hist": np.histogram(cadence, CADENCE_BINS)[0].tolist(),
        "ok_frames": sum(r["end_frame"] - r["start_frame"] for r in ok),
    }
    by_status: dict[str, list[float]] = {}
    for r in rows:
        if r.get("judge_score") is not None:
            by_status.setdefault(r["status"], []).append(r["judge_score"])
    if by_status:  # pks judge score ran: every analysed clip, ok or not
        judged = [v for vs in by_status.values() for v in vs]
        stats["judge"] = {
            "scored": len(judged),
            "hist": np.histogram(judged, JUDGE_BINS)[0].tolist(),
            "median": float(np.median(judged)),
            "by_status": {st: round(float(np.mean(vs)), 3) for st, vs in sorted(by_status.items())},
        }
    index = out / "shards" / "index.parquet"
    if index.exists():
        idx = pq.read_table(index).to_pylist()
        stats["shards"] = {
            "samples": len(idx),
            "shards": len({r["shard"] for r in idx}),
            "per_split_stage": dict(sorted(Counter(f"{r['split']}/stage-{r['stage']}" for r in idx).items())),
            "videos_per_split": {s: len({r["video_id"] for r in idx if r["split"] == s}) for s in ("train", "val")},
            "bytes": sum(r["clip_bytes"] for r in idx),
        }
        from pks.shardfile import stale_samples

        stats["shards"]["stale"] = stale_samples(out)[0]
    runs = out / "runs.jsonl"
    stats["runs"] = jsonl_entries(runs.read_text()) if runs.exists() else []  # a line torn by a kill is skipped
    return stats


def format_stats(s: dict) -> str:
    """The stats as terminal text."""
    lines = [
        f"clips {s['clips']} from {s['videos']} video(s): " + ", ".join(f"{k} {v}" for k, v in s["status"].items())
    ]
    for status in ("rejected", "error"):
        for why, n in s["reasons"][status].items():
            lines.append(f"  {status:8s} {n:5d}  {why}")
    lines.append("ok clips per curriculum stage: " + "  ".join(f"{k}: {v}" for k, v in s["stage_ok"].items()))
    if "shards" in s:
        sh = s["shards"]
        lines.append(
            f"shards: {sh['shards']} holding {sh['samples']} sample(s), {sh['bytes'] / 1e6:.1f} MB; "
            + "  ".join(f"{k}: {v}" for k, v in sh["per_split_stage"].items())
            + f"; videos train {sh['videos_per_split']['train']}, val {sh['videos_per_split']['val']}"
        )
        if sh.get("stale"):
            lines.append(f"  stale: {sh['stale']} sample(s) no longer match the manifest: run pks shard")
    lines.append("quality flags: " + (", ".join(f"{k} {v}" for k, v in s["quality_flags"].items()) or "none"))
    lines.append("camera motion: " + (", ".join(f"{k} {v}" for k, v in s["camera_mix"].items()) or "none"))
    for axis, counts in s["tags"].items():
        lines.append(f"tags {axis}: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    lines.append("captions by: " + (", ".join(f"{k} {v}" for k, v in s["caption_source"].items()) or "none"))
    edges = DEFORMATION_BINS
    lines.append(
        "deformation: "
        + "  ".join(f"{edges[i]:.1f}-{edges[i + 1]:.1f}: {n}" for i, n in enumerate(s["deformation_hist"]))
    )
    labels = ["1", "2", "3", "4", "5-8"]
    lines.append(
        "cadence (frames per drawing): " + "  ".join(f"{lab}: {n}" for lab, n in zip(labels, s["cadence_hist"]))
    )
    if "judge" in s:
        j = s["judge"]
        lines.append(
            f"judge score ({j['scored']} clips, median {j['median']:.2f}; mean by status: "
            + ", ".join(f"{k} {v:.2f}" for k, v in j["by_status"].items())
            + "): "
            + "  ".join(f"{JUDGE_BINS[i]:.1f}-{JUDGE_BINS[i + 1]:.1f}: {n}" for i, n in enumerate(j["hist"]))
        )
    for r in s["runs"]:
        rate = f", {r['source_frames_per_s']} source frames/s" if r.get("source_frames_per_s") else ""
        what = f"{r.get('videos', 0)} video(s)" if r["job"] == "curate" else f"{r.get('samples', 0)} sample(s)"
        lines.append(f"run {r['at']} {r['job']}: {what} in {r['seconds']}s{rate}")
    return "\n".join(lines)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _bar(title: str, counts: dict, color: str = "#4a7bd0") -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.3 * max(len(counts), 3) + 0.8))
    names = list(counts)[::-1]
    ax.barh(names, [counts[n] for n in names], color=color)
    ax.set_title(title)
    return _png(fig)


def _hist(title: str, counts: list, labels: list[str]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.bar(labels, counts, color="#d0704a")
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=45)
    return _png(fig)


def contact_sheets(out: Path, per_stage: int = 12, width: int = 160) -> dict[int, str]:
    """Per stage, a grid of middle-frame thumbnails: from the shards' jpgs when there are
    shards, else decoded from the clip files."""
    out = Path(out)
    index = out / "shards" / "index.parquet"
    thumbs: dict[int, list[np.ndarray]] = {}
    if index.exists():
        picked: dict[str, list[tuple[int, str]]] = {}
        taken: Counter[int] = Counter()
        for r in pq.read_table(index, columns=["shard", "stage", "clip_id"]).to_pylist():
            if taken[r["stage"]] < per_stage:
                taken[r["stage"]] += 1
                picked.setdefault(r["shard"], []).append((r["stage"], r["clip_id"]))
        for shard, items in picked.items():
            with tarfile.open(out / "shards" / shard) as t:
                for stage, key in items:
                    member = t.extractfile(f"{key}.jpg")
                    assert member is not None  # a regular file: pks shard writes no other kind
                    thumbs.setdefault(stage, []).append(_decode_jpeg(member.read()))
    else:
        from pipelines.shard import middle_frame_jpeg
        from pks.clips import clip_path

        rows = pq.read_table(out / "manifest.parquet", columns=["clip_id", "status", "curriculum_stage"]).to_pylist()
        for r in rows:
            k = r["curriculum_stage"]
            if r["status"] == "ok" and k is not None and len(thumbs.get(k, [])) < per_stage:
                if clip_path(out, r["clip_id"]).exists():
                    data = middle_frame_jpeg(clip_path(out, r["clip_id"]), width)
                    thumbs.setdefault(k, []).append(_decode_jpeg(data))
    return {stage: _sheet(imgs, width) for stage, imgs in sorted(thumbs.items())}


def _decode_jpeg(data: bytes) -> np.ndarray:
    """A BGR image from JPEG bytes (of a shard's thumbnail or a clip's middle frame)."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a decodable image")
    return img


def _sheet(images: list[np.ndarray], width: int, captions: list[str] | None = None) -> str:
    """BGR thumbnails in a grid of 6 per row (each captioned when given), as a PNG data URL."""
    import cv2

    h = round(width * 9 / 16)
    tiles = [cv2.resize(i, (width, h), interpolation=cv2.INTER_AREA) for i in images]
    for tile, text in zip(tiles, captions or []):
        cv2.rectangle(tile, (0, h - 16), (width, h), (0, 0, 0), -1)
        cv2.putText(tile, text, (3, h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % 6)
    grid = np.vstack([np.hstack(tiles[i : i + 6]) for i in range(0, len(tiles), 6)])
    ok, buf = cv2.imencode(".png", grid)
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def judge_sheets(out: Path, n: int = 12, width: int = 160) -> dict[str, str]:
    """The n lowest and n highest judge_score clips (with a clip file), middle frames captioned
    with score, status and stage: where the Judge and the curation disagree shows here first."""
    from pipelines.shard import middle_frame_jpeg
    from pks.clips import clip_path

    rows = pq.read_table(
        out / "manifest.parquet", columns=["clip_id", "status", "curriculum_stage", "judge_score"]
    ).to_pylist()
    rows = sorted(
        (r for r in rows if r["judge_score"] is not None and clip_path(out, r["clip_id"]).exists()),
        key=lambda r: r["judge_score"],
    )
    sheets = {}
    for name, pick in (("lowest", rows[:n]), ("highest", rows[::-1][:n])):
        if pick:
            imgs = [_decode_jpeg(middle_frame_jpeg(clip_path(out, r["clip_id"]), width)) for r in pick]
            sheets[name] = _sheet(
                imgs, width, [f"{r['judge_score']:.2f} {r['status']} s{r['curriculum_stage']}" for r in pick]
            )
    return sheets


def filmstrip(clip: Path, n: int = 8, height: int = 96) -> str:
    """n evenly spaced frames of a (generated) clip side by side, as a PNG data URL."""
    import av
    import cv2

    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    pick = [frames[i] for i in np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)]
    scale = height / pick[0].shape[0]
    strip = np.hstack(
        [cv2.resize(f, (round(f.shape[1] * scale), height), interpolation=cv2.INTER_NEAREST) for f in pick]
    )
    ok, buf = cv2.imencode(".png", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def measured(clip: Path, cfg: JobConfig) -> str:
    """What the signal analysers (job config `cfg`) read in a generated clip: camera, deformation
    (its stage), flags."""
    import av

    from annotators.signals import analyse, load_clip

    try:
        with av.open(str(clip)) as c:
            rate = c.streams.video[0].average_rate
            if rate is None:
                raise ValueError("no frame rate")
            fps = float(rate)
        got = analyse(load_clip(str(clip), width=cfg.analyse.width, fps=fps), cfg.analyse, cfg.curriculum)
    except Exception as e:  # a clip the analysers cannot read is reported, not fatal to the report
        return f"cannot analyse ({e})"
    return (
        f"camera={'+'.join(got['camera_motion']) or 'none'}, deformation {got['deformation_score']:.2f} "
        f"(stage {got['curriculum_stage']}), flags: {', '.join(got['quality_flags']) or 'none'}"
    )


def write_report(out: Path) -> Path:
    """OUT/report.html: self-contained (no external files or scripts)."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    s = run_stats(out)
    esc = html.escape
    parts = [
        f"<h1>PKS run report</h1><p>{esc(str(out))}</p><pre>{esc(format_stats(s))}</pre>",
        '<div class="grid">',
        f'<img src="{_bar("Clips per status", s["status"], "#6a6")}">',
        f'<img src="{_bar("OK clips per curriculum stage", {f"stage {k}": v for k, v in s["stage_ok"].items()})}">',
    ]
    if "shards" in s:
        parts.append(f'<img src="{_bar("Shard samples per split/stage", s["shards"]["per_split_stage"])}">')
    reasons = {f"{k}: {why}": n for k in ("rejected", "error") for why, n in s["reasons"][k].items()}
    if reasons:
        parts.append(f'<img src="{_bar("Rejection and error reasons", reasons, "#c55")}">')
    labels = [f"{a:.1f}" for a in DEFORMATION_BINS[:-1]]
    parts.append(f'<img src="{_hist("Deformation score (ok clips)", s["deformation_hist"], labels)}">')
    parts.append(f'<img src="{_hist("Cadence, frames per drawing", s["cadence_hist"], ["1", "2", "3", "4", "5-8"])}">')
    if "judge" in s:
        parts.append(
            f'<img src="{_hist("Judge score (every analysed clip)", s["judge"]["hist"], [f"{a:.1f}" for a in JUDGE_BINS[:-1]])}">'
        )
    if s["camera_mix"]:
        parts.append(f'<img src="{_bar("Camera motion mix", s["camera_mix"])}">')
    for axis, counts in s["tags"].items():
        if counts:
            parts.append(f'<img src="{_bar(f"Tags: {axis}", counts, "#8a5fbf")}">')
    parts.append("</div>")
    if (out / "audit" / "audit.db").exists():  # the annotators' audit (pks audit)
        from annotators.audit.stats import audit_stats
        from annotators.audit.stats import format_stats as audit_text
        from annotators.audit.store import Store

        store = Store(out)
        try:
            parts.append(f"<h2>Audit</h2><pre>{esc(audit_text(audit_stats(out, store, taxonomy.load())))}</pre>")
        finally:
            store.close()
    parts.append("<h2>Contact sheets</h2>")
    for stage, src in contact_sheets(out).items():
        parts.append(f'<h3>stage {stage}</h3><img class="sheet" src="{src}">')
    if "judge" in s:
        for name, src in judge_sheets(out).items():
            parts.append(f'<h3>Judge: {name} scores</h3><img class="sheet" src="{src}">')
    generated = sorted((out / "generated").glob("*.mp4")) if (out / "generated").is_dir() else []
    if generated:
        from pks.config import load_config

        cfg = load_config()  # the default analysis, as pks curate runs it
        parts.append(
            "<h2>Generated clips</h2><p>Each clip as asked, and as PKS's own analysers read it "
            "(the same analysis a curated clip gets).</p>"
        )
    for clip in generated:
        meta = clip.with_suffix(".json")
        what = json.loads(meta.read_text()) if meta.exists() else {}
        request = ", ".join(f"{a}={'+'.join(v)}" for a, v in (what.get("tags") or {}).items())
        request += "".join(f", {k}={what[k]}" for k in ("shot", "stage") if what.get(k) is not None)
        got = measured(clip, cfg)
        parts.append(
            f"<h3>{esc(clip.name)}: {esc(request or 'no tags')}"
            f"{esc(' / ' + what['narrative']) if what.get('narrative') else ''}</h3>"
            f"<p>measured: {esc(got)}</p>"
            f'<img class="sheet" src="{filmstrip(clip)}">'
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>PKS report</title><style>"
        "body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}"
        ".grid img{max-width:48%;margin:0.5%}.sheet{max-width:100%}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return path
