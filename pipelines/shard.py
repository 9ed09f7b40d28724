"""`pks shard`: OUT/manifest.parquet -> WebDataset tars per split and curriculum stage, plus
OUT/shards/index.parquet (clip_id -> shard, split, stage).

A sample is `{key}.mp4` (the clip), `{key}.json` (its record), `{key}.jpg` (middle frame),
with key = clip_id. Which clips go in: status ok, a clip file, a curriculum stage, none of the
configured reject flags (and a caption when required); the rest are marked `rejected` in the
manifest with the reason. Splits are by source video, never by clip. The plan (which sample in
which shard) is a pure function of the manifest and the config, so a rerun after a kill writes
the same shards: a shard is written under a temporary name and renamed when complete, and a
finished shard whose members match the plan is kept as it is.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pks.clips import clip_path
from pks.record import SCHEMA, ClipRecord
from pks.seeded import unit

SHARD_REJECT = "shard: "  # prefix of rejections this stage records (a rerun judges them again)
SPLITS = ("train", "val")
INDEX_SCHEMA = pa.schema([("clip_id", pa.string()), ("video_id", pa.string()), ("split", pa.string()),
                          ("stage", pa.int32()), ("shard", pa.string()), ("position", pa.int32()),
                          ("clip_bytes", pa.int64())])


def shard_dir(out: Path) -> Path:
    return Path(out) / "shards"


def shard_name(split: str, stage: int, n: int) -> str:
    """A shard's path under OUT/shards/."""
    return f"{split}/stage-{stage}/shard-{n:06d}.tar"


def rejection(r: ClipRecord, out: Path, sc: dict) -> str:
    """Why an ok record stays out of the shards ('' when it goes in)."""
    bad = sorted(set(r.quality_flags) & set(sc["reject_flags"]))
    if bad:
        return f"{SHARD_REJECT}quality flags {', '.join(bad)}"
    if r.curriculum_stage is None:
        return f"{SHARD_REJECT}not analysed (no curriculum stage)"
    if sc["require_caption"] and not r.caption:
        return f"{SHARD_REJECT}no caption"
    if not clip_path(out, r.clip_id).exists():
        return f"{SHARD_REJECT}no clip file"
    return ""


def judge(records: list[ClipRecord], out: Path, sc: dict) -> list[ClipRecord]:
    """Mark ok records that stay out as rejected (with why); earlier shard rejections are judged
    again, so a changed config takes them back in."""
    result = []
    for r in records:
        if r.status == "rejected" and r.error.startswith(SHARD_REJECT):
            r = dataclasses.replace(r, status="ok", error="")
        if r.status == "ok":
            why = rejection(r, out, sc)
            if why:
                r = dataclasses.replace(r, status="rejected", error=why)
        result.append(r)
    return result


def assign_splits(video_ids: list[str], seed: int, val_fraction: float) -> dict[str, str]:
    """Split by source video: a video's hash decides, so adding videos never moves old ones.
    With val_fraction > 0 and two or more videos, each split gets at least one video."""
    u = {v: unit(seed, "split", v) for v in sorted(set(video_ids))}
    split = {v: "val" if x < val_fraction else "train" for v, x in u.items()}
    if val_fraction > 0 and len(u) >= 2:
        if "val" not in split.values():
            split[min(u, key=u.get)] = "val"
        if "train" not in split.values():
            split[max(u, key=u.get)] = "train"
    return split


def plan(rows: list[dict], sc: dict) -> list[dict]:
    """Shards to write: [{name, split, stage, members}], members being rows with clip_id,
    video_id and clip_bytes. Within a split and stage the clips are shuffled with the seed (so
    clips of one video spread across shards), then packed up to max_samples and max_bytes."""
    split = assign_splits([r["video_id"] for r in rows], sc["seed"], sc["val_fraction"])
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((split[r["video_id"]], r["curriculum_stage"]), []).append(r)
    shards = []
    for (sp, stage), members in sorted(groups.items()):
        members.sort(key=lambda r: r["clip_id"])
        rng = np.random.default_rng(int(unit(sc["seed"], "order", sp, stage) * 2 ** 63))
        packed: list[list[dict]] = [[]]
        size = 0
        for i in rng.permutation(len(members)):
            r = members[i]
            if packed[-1] and (len(packed[-1]) >= sc["max_samples"] or size + r["clip_bytes"] > sc["max_bytes"]):
                packed.append([])
                size = 0
            packed[-1].append(r)
            size += r["clip_bytes"]
        shards += [{"name": shard_name(sp, stage, n), "split": sp, "stage": stage, "members": m}
                   for n, m in enumerate(packed)]
    return shards


def middle_frame_jpeg(path: Path, width: int) -> bytes:
    """The clip's middle frame as a JPEG at most `width` pixels wide."""
    import cv2
    import decord

    vr = decord.VideoReader(str(path))
    rgb = vr[len(vr) // 2].asnumpy()
    h, w = rgb.shape[:2]
    if w > width:
        rgb = cv2.resize(rgb, (width, round(h * width / w) // 2 * 2), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError(f"cannot encode the thumbnail of {path}")
    return buf.tobytes()


def members_of(tar: Path) -> list[str]:
    """The sample keys of a finished shard, in order (reads tar headers only)."""
    with tarfile.open(tar) as t:
        return list(dict.fromkeys(n.split(".", 1)[0] for n in t.getnames()))


def write_shard(spec: dict, out: Path, thumb_width: int = 384) -> dict:
    """Write one planned shard (a plain function; Ray wraps it), its records read from the
    manifest for the planned clip_ids."""
    import webdataset as wds

    final = shard_dir(out) / spec["name"]
    keys = [m["clip_id"] for m in spec["members"]]
    table = pq.read_table(Path(out) / "manifest.parquet", schema=SCHEMA, filters=[("clip_id", "in", keys)])
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    with wds.TarWriter(str(tmp)) as sink:
        for key in keys:
            clip = clip_path(out, key)
            sink.write({"__key__": key, "mp4": clip.read_bytes(),
                        "json": json.dumps(rows[key], sort_keys=True).encode(),
                        "jpg": middle_frame_jpeg(clip, thumb_width)})
    os.replace(tmp, final)
    return {"name": spec["name"], "samples": len(keys)}


def is_written(root: Path, spec: dict) -> bool:
    """A finished shard that holds exactly the planned samples (a rerun keeps it)."""
    tar = root / spec["name"]
    return tar.exists() and members_of(tar) == [m["clip_id"] for m in spec["members"]]


def _ray_write(spec: dict, out: str, thumb_width: int) -> dict:
    return write_shard(spec, Path(out), thumb_width)


def shard_run(out: Path, cfg: dict, progress=print) -> dict:
    """Judge, plan and write the shards of a finished run; then the index. Resumable."""
    import ray

    from pipelines.curate import init_ray, rewrite_parts

    out = Path(out).resolve()
    sc = cfg["shard"]
    if not (out / "parts").is_dir():
        raise FileNotFoundError(f"no curated run in {out} (run pks curate first)")
    for _ in rewrite_parts(out, cfg, lambda rs: judge(rs, out, sc)):  # rejections land in the manifest
        pass
    cols = ["clip_id", "video_id", "curriculum_stage", "status"]
    rows = [r for r in pq.read_table(out / "manifest.parquet", columns=cols).to_pylist() if r["status"] == "ok"]
    for r in rows:
        r["clip_bytes"] = clip_path(out, r["clip_id"]).stat().st_size
    shards = plan(rows, sc)
    root = shard_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.rglob("*.tmp-*"):  # left by a killed run
        stale.unlink()
    todo = [s for s in shards if not is_written(root, s)]
    progress(f"pks shard: {len(rows)} clip(s) in {len(shards)} shard(s), {len(shards) - len(todo)} already written")
    if todo:
        init_ray(cfg)
        ds = ray.data.from_items(todo, override_num_blocks=len(todo))
        ds = ds.map(_ray_write, fn_kwargs={"out": str(out), "thumb_width": sc["thumb_width"]}, num_cpus=1)
        for i, s in enumerate(ds.iter_rows(), 1):
            progress(f"  [{i}/{len(todo)}] {s['name']}: {s['samples']} sample(s)")
    planned = {s["name"] for s in shards}
    for tar in root.rglob("*.tar"):  # shards of an earlier plan that this one does not have
        if str(tar.relative_to(root)) not in planned:
            tar.unlink()
    index = [{"clip_id": m["clip_id"], "video_id": m["video_id"], "split": s["split"], "stage": s["stage"],
              "shard": s["name"], "position": i, "clip_bytes": m["clip_bytes"]}
             for s in shards for i, m in enumerate(s["members"])]
    tmp = root / "index.parquet.tmp"
    pq.write_table(pa.Table.from_pylist(index, schema=INDEX_SCHEMA), tmp)
    os.replace(tmp, root / "index.parquet")
    per = {f"{sp}/stage-{k}": sum(1 for x in index if (x["split"], x["stage"]) == (sp, k))
           for sp in SPLITS for k in range(4)}
    return {"shards": len(shards), "written": len(todo), "samples": len(index),
            "per_split_stage": {k: v for k, v in per.items() if v}, "index": str(root / "index.parquet")}
