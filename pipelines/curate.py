"""`pks curate`: the Ray Data job from raw footage to OUT/manifest.parquet.

Each video is one unit of work. Its records are written by the worker to
OUT/parts/{video_id}.parquet under a temporary name and renamed when complete, so a rerun (or
a resume after kill -9) skips finished videos and never duplicates a record; the manifest is
then rebuilt from the parts.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pks.config import load_config
from pks.probe import ProbeError, content_hash, list_inputs, probe
from pks.record import SCHEMA, ClipRecord, to_table


def video_key(path: str) -> str:
    """The video_id: the content hash, or for an unreadable file a hash of its path."""
    try:
        return content_hash(path)
    except OSError:
        return "path-" + hashlib.blake2b(path.encode(), digest_size=6).hexdigest()


def ingest(path: str, vid: str) -> list[ClipRecord]:
    """Probe one video -> its records (here: one spanning the whole video, or one error row)."""
    if vid.startswith("path-"):
        return [ClipRecord(video_id=vid, source_path=path, status="error", error="cannot read file")]
    try:
        info = probe(path, video_id=vid)
    except ProbeError as e:
        return [ClipRecord(video_id=vid, source_path=path, status="error", error=str(e))]
    return [ClipRecord(video_id=vid, source_path=path, start_frame=0, end_frame=info.n_frames,
                       fps=info.avg_fps, width=info.width, height=info.height)]


def part_path(out: Path, video_id: str) -> Path:
    return out / "parts" / f"{video_id}.parquet"


def write_part(out: Path, video_id: str, records: list[ClipRecord]) -> None:
    """Atomically write one video's records: readers see all of them or none."""
    final = part_path(out, video_id)
    tmp = final.with_suffix(f".tmp-{os.getpid()}")
    pq.write_table(to_table(records), tmp)
    os.replace(tmp, final)


def process_video(row: dict, out: str) -> dict:
    """The Ray task: ingest one video and persist its records; returns a one-line summary."""
    t0 = time.perf_counter()
    vid = row["video_id"]
    records = ingest(row["path"], vid)
    write_part(Path(out), vid, records)
    return {"path": row["path"], "video_id": vid, "n_records": len(records),
            "n_errors": sum(r.status == "error" for r in records), "seconds": time.perf_counter() - t0}


def build_manifest(out: Path) -> pa.Table:
    """Concatenate all finished parts into OUT/manifest.parquet (atomically)."""
    parts = sorted((out / "parts").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts]) if parts else SCHEMA.empty_table()
    tmp = out / "manifest.parquet.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out / "manifest.parquet")
    return table


def done_video_ids(out: Path) -> set[str]:
    return {p.stem for p in (out / "parts").glob("*.parquet")}


def init_ray(cfg: dict) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg["ray"].get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=cfg["ray"].get("num_cpus"), include_dashboard=False,
                 log_to_driver=False, configure_logging=True, logging_level="WARNING")


def run(input_spec: str, out: str | Path, cfg: dict | None = None, progress=print) -> dict:
    """Run the job. Returns counts: inputs, skipped (already done), processed, records, errors."""
    import ray

    cfg = cfg or load_config()
    out = Path(out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    paths = list_inputs(input_spec)
    # Identical files are processed once: hash on the driver only to dedupe and to skip done work.
    done = done_video_ids(out)
    todo, seen, skipped = [], set(), 0
    for p in paths:
        vid = video_key(p)
        if vid in done:
            skipped += 1
            continue
        if cfg["ingest"].get("dedupe", True) and vid in seen:
            skipped += 1
            continue
        seen.add(vid)
        todo.append({"path": p, "video_id": vid})
    progress(f"pks curate: {len(paths)} input(s), {skipped} already done or duplicate, {len(todo)} to process")
    summaries = []
    if todo:
        init_ray(cfg)
        ds = ray.data.from_items(todo, override_num_blocks=len(todo))
        ds = ds.map(process_video, fn_kwargs={"out": str(out.resolve())})
        for s in ds.iter_rows():  # streamed: nothing accumulates but the small summaries
            summaries.append(s)
            progress(f"  [{len(summaries)}/{len(todo)}] {Path(s['path']).name}: {s['n_records']} record(s)"
                     + (f", {s['n_errors']} error(s)" if s["n_errors"] else "") + f" in {s['seconds']:.1f}s")
    table = build_manifest(out)
    status = table.column("status").to_pylist()
    return {"inputs": len(paths), "skipped": skipped, "processed": len(summaries), "records": table.num_rows,
            "errors": status.count("error"), "manifest": str(out / "manifest.parquet")}
