"""Driver memory of the shard plan at 10^5 and 10^6 clips, without any video.

    python benchmarks/scale_plan.py --rows 100000 1000000 [--work DIR] [--code DIR] [--keep]

For each size it synthesises OUT (once, kept in WORK/rows-N): a manifest.parquet of N rows with
the project's schema (pks.record.SCHEMA: ~97% ok, 200 clips per video, a signals JSON, a
caption, a phash, as curation writes them; a row group per video, as build_manifest writes it), an empty clips/{clip_id}.mp4 per ok clip, and a
previous shards/index.parquet naming every ok clip (so clip hashes are reused, as on a rerun,
and the previous index is read as a rerun reads it). No tar exists, so every shard is to be
written: the worst case for the plan, which then hands every record to its shard.

It then plans in a fresh child process (imports from --code, default this checkout, so the
same script measures an older checkout too) exactly what `pks shard` does before Ray starts:
read the previous index, the clip listing and the manifest, plan, fingerprint, decide what to
write, and hand the shards to write their records (the spec list with each record's JSON in
older code; the spill files in newer). It prints the child's peak RSS (ru_maxrss), its RSS
after the imports, the seconds, and a digest of the plan (shard names and fingerprints), which
must be the same for any two checkouts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIPS_PER_VIDEO = 200


def synthesise(out: Path, n: int, chunk: int = 50_000) -> None:  # chunk: a multiple of CLIPS_PER_VIDEO
    """OUT with n manifest rows, an empty clip file per ok row and a previous index."""
    sys.path.insert(0, str(ROOT))
    import hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pks.record import SCHEMA, ClipRecord

    if (out / "shards" / "index.parquet").exists():
        return
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    empty = hashlib.blake2b(b"", digest_size=16).hexdigest()
    camera = ["static", "pan_left", "pan_right", "tilt_up", "zoom_in", "shake"]
    ok_ids = []
    with pq.ParquetWriter(out / "manifest.parquet", SCHEMA) as w:
        for start in range(0, n, chunk):
            rows = []
            for i in range(start, min(n, start + chunk)):
                vid = f"{i // CLIPS_PER_VIDEO:016x}"
                s = (i % CLIPS_PER_VIDEO) * 48
                u = rng.random()
                status = "ok" if u < 0.97 else ("rejected" if u < 0.99 else "error")
                r = ClipRecord(
                    video_id=vid,
                    source_path=f"/data/anime/season-01/episode-{i // CLIPS_PER_VIDEO:05d}.mkv",
                    start_frame=s,
                    end_frame=s + 48,
                    fps=23.976,
                    width=1920,
                    height=1080,
                    transition_in="cut",
                    cadence=2.0,
                    held_ratio=0.5,
                    camera_motion=[camera[i % 6]],
                    motion_score=float(rng.random()),
                    deformation_score=float(rng.random()),
                    smear_frames=1,
                    impact_frames=0,
                    quality_flags=["letterbox"] if status == "rejected" else [],
                    curriculum_stage=int(rng.integers(4)),
                    phash=" ".join(f"{x:016x}" for x in rng.integers(0, 2**63, 8)),
                    signals=json.dumps(
                        {
                            "camera": {
                                "dx": float(rng.normal()),
                                "dy": float(rng.normal()),
                                "zoom": float(rng.normal()),
                                "roll": float(rng.normal()),
                            },
                            "deformation_raw": float(rng.random()),
                            "quality": {
                                k: float(rng.random()) for k in ("comb", "block", "garbage", "frozen", "black", "bars")
                            },
                        }
                    ),
                    caption={
                        "narrative": "A girl with a red scarf runs along the river at dusk while the "
                        "camera pans to follow her; speed lines streak behind her.",
                        "style": ["cel"],
                        "motion": ["run"],
                        "camera": [camera[i % 6]],
                        "vfx": ["speed_lines"],
                        "shot": "medium",
                    },
                    caption_source="signals pks-prompt-3 taxonomy-1.2",
                    status=status,
                    error="shard: quality flags letterbox"
                    if status == "rejected"
                    else ("decode: broken packet" if status == "error" else ""),
                )
                rows.append(r.to_row())
                if status == "ok":
                    ok_ids.append(r.clip_id)
            table = pa.Table.from_pylist(rows, schema=SCHEMA)
            for v in range(0, len(rows), CLIPS_PER_VIDEO):  # a row group per video, as build_manifest writes a part
                w.write_table(table.slice(v, CLIPS_PER_VIDEO))
    for cid in ok_ids:
        open(out / "clips" / f"{cid}.mp4", "wb").close()
    stats = {e.name: e.stat() for e in os.scandir(out / "clips")}
    index = {"clip_id": ok_ids, "video_id": [c.rsplit("_", 2)[0] for c in ok_ids]}
    index.update(
        split=["train"] * len(ok_ids),
        stage=[0] * len(ok_ids),
        shard=[f"train/stage-0/shard-{i // 256:06d}.tar" for i in range(len(ok_ids))],
        position=[i % 256 for i in range(len(ok_ids))],
        clip_bytes=[0] * len(ok_ids),
        clip_mtime_ns=[stats[f"{c}.mp4"].st_mtime_ns for c in ok_ids],
        clip_hash=[empty] * len(ok_ids),
        record_hash=["0" * 32] * len(ok_ids),
        offset=[1536 + (i % 256) * 4096 for i in range(len(ok_ids))],
        length=[4096] * len(ok_ids),
        frames=[48] * len(ok_ids),
        fps=[23.976] * len(ok_ids),
    )
    from pipelines.shard import INDEX_SCHEMA

    pq.write_table(pa.table(index, schema=INDEX_SCHEMA), out / "shards" / "index.parquet", row_group_size=1 << 16)


CHILD = r"""
import hashlib, json, os, resource, sys, time
from pipelines import shard
from pks.config import load_config
from pks.store import as_store
rss0 = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
out, sc = as_store(sys.argv[1]), load_config().shard
t = time.time()
if hasattr(shard, "plan_shards"):  # columns and spill files
    rows, shards, previous = shard.plan_shards(out, sc, {})
    for s in shards:
        s["why"] = shard.why_rewrite(out, s, rows, previous)
    todo = [s for s in shards if s["why"]]
    spills = shard.spill_records(out, rows, todo, "bench")
    n = rows.num_rows
    for k in spills:
        out.remove(k)
else:  # a dict per clip, with its record's JSON
    previous = shard.read_index(out)
    rows = shard.samples(out, previous)
    shards = shard.plan(rows, sc, {})
    for s in shards:
        s["fingerprint"] = shard.shard_fingerprint(s, sc.thumb_width)
    for s in shards:
        s["why"] = shard.why_rewrite(out, s, previous)
    todo = [s for s in shards if s["why"]]
    n = len(rows)
seconds = time.time() - t
plan = hashlib.blake2b(json.dumps([(s["name"], s["fingerprint"]) for s in shards]).encode(), digest_size=8).hexdigest()
print(json.dumps({"clips": n, "shards": len(shards), "to_write": len(todo), "seconds": round(seconds, 1),
                  "rss_after_imports_mb": round(rss0 / 2**20), "peak_rss_mb": round(resource.getrusage(
                      resource.RUSAGE_SELF).ru_maxrss / 1024), "plan": plan}))
"""


def measure(out: Path, code: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    r = subprocess.run([sys.executable, "-c", CHILD, str(out)], capture_output=True, text=True, env=env, cwd=code)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pks-scale-plan")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose pipelines.shard plans")
    args = ap.parse_args()
    print(f"code: {args.code}")
    print("| manifest rows | ok clips | shards | peak driver RSS | RSS after imports | plan seconds | plan digest |")
    print("|---|---|---|---|---|---|---|")
    for n in args.rows:
        out = args.work / f"rows-{n}"
        t = time.time()
        synthesise(out, n)
        if time.time() - t > 1:
            print(f"(synthesised {out} in {time.time() - t:.0f} s)", file=sys.stderr)
        m = measure(out, args.code.resolve())
        print(
            f"| {n:,} | {m['clips']:,} | {m['shards']:,} | {m['peak_rss_mb']:,} MB | {m['rss_after_imports_mb']} MB "
            f"| {m['seconds']} | {m['plan']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
