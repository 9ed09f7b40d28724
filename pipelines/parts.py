"""A run's records on disk: one Parquet part per video (OUT/parts/{video_id}.parquet, written
whole or not at all), and OUT/manifest.parquet streamed from them with near-duplicates marked.
Every stage that changes records rewrites the parts, then rebuilds the manifest."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from annotators.signals.dedupe import find_duplicates
from annotators.signals.embed import streamed_duplicates
from pks.jobconfig import AnalyseConfig, JobConfig
from pks.record import SCHEMA, SHARD_REJECT, ClipRecord, write_parquet
from pks.store import Store, as_store, first_line

log = logging.getLogger(__name__)


def part_key(video_id: str) -> str:
    return f"parts/{video_id}.parquet"


def part_path(out: Path, video_id: str) -> Path:
    return Path(out) / part_key(video_id)


def write_part(out: Path | Store, video_id: str, records: list[ClipRecord]) -> None:
    """Atomically write one video's records: readers see all of them or none."""
    with as_store(out).writing(part_key(video_id)) as tmp:
        write_parquet(records, tmp)


def read_part(out: Path | Store, video_id: str) -> list[ClipRecord]:
    return [ClipRecord.from_row(r) for r in as_store(out).read_table(part_key(video_id), schema=SCHEMA).to_pylist()]


def parts_of(out: Store) -> list[str]:
    """The keys of the finished parts, sorted."""
    return [f"parts/{n}" for n in out.list("parts") if n.endswith(".parquet")]


def set_aside_bad_parts(out: Store, progress=None) -> int:
    """Move each part that does not read (a power loss can leave a renamed part empty or torn)
    to OUT/parts/bad/, saying so in one line (to `progress`, default a logged warning): its
    video then has no part, so pks curate processes it again (on this run when called before
    `plan`), and no reader of the parts stumbles on it. Reads each part's footer. Returns how
    many were moved."""
    moved = 0
    for p in parts_of(out):
        try:
            with out.open(p) as f:
                pq.read_metadata(f)
        except pa.ArrowInvalid as e:  # not Parquet (a store that cannot be read raises OSError, and stops the run)
            out.move(p, f"parts/bad/{Path(p).name}")
            (progress or log.warning)(
                f"pks: warning: {out.url(p)} does not read ({first_line(e)}); moved to parts/bad/, "
                "pks curate processes its video again"
            )
            moved += 1
    return moved


def duplicates(out: Path | Store, a: AnalyseConfig, parts: list[str] | None = None) -> dict[str, str]:
    """{clip_id: the clip kept of its near-duplicate group} for every clip that nearly repeats
    another; the group's earliest clip_id (smallest video_id, then start_frame) is the one kept.
    Searched over ok clips and the shard stage's rejections (which it judges again), so a
    duplicate the shard stage rejected stays one. A part at a time (plus a hash per clip)."""
    out = as_store(out)
    sigs = []
    for p in parts_of(out) if parts is None else parts:
        t = out.read_table(p, columns=["clip_id", "phash", "status", "error"]).to_pylist()
        sigs += [
            (r["clip_id"], r["phash"])
            for r in t
            if r["phash"] and (r["status"] == "ok" or r["error"].startswith(SHARD_REJECT))
        ]
    sigs.sort()  # both searches point each duplicate at an earlier clip: the earliest is kept
    dupes = find_duplicates(sigs, a.duplicate_bits)
    have = set(out.list("embeddings"))
    emb = [cid for cid, _ in sigs if f"{cid}.npy" in have]
    if emb:  # semantic near-duplicates (OpenCLIP) that the hashes did not already catch, read a batch at a time

        def load(ids: list[str]) -> np.ndarray:
            return np.stack([np.load(io.BytesIO(out.read_bytes(f"embeddings/{c}.npy"))) for c in ids])

        similarity = a.clip_embeddings.similarity
        for cid, other in streamed_duplicates(emb, load, similarity).items():
            dupes.setdefault(cid, other)

    def kept(cid: str) -> str:  # a semantic match can point at a hash duplicate: follow it to the group's first
        while cid in dupes:
            cid = dupes[cid]
        return cid

    return {cid: kept(cid) for cid in dupes}


def build_manifest(out: Path | Store, cfg: JobConfig, dupes: dict[str, str] | None = None) -> dict[str, int]:
    """Stream all finished parts into OUT/manifest.parquet (atomically); count statuses and
    mark near-duplicates across videos (`duplicate`, duplicate_of the clip kept of the group;
    `dupes` when the caller has them from these parts). One part in memory at a time, so memory
    does not grow with the length of the footage."""
    out = as_store(out)
    parts = parts_of(out)
    dupes = duplicates(out, cfg.analyse, parts) if dupes is None else dupes
    counts = {"ok": 0, "rejected": 0, "error": 0}
    with out.writing("manifest.parquet") as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for p in parts:
            table = out.read_table(p, schema=SCHEMA)
            if dupes and any(c in dupes for c in table.column("clip_id").to_pylist()):
                rows = table.to_pylist()
                for r in rows:
                    if r["clip_id"] in dupes:
                        r["duplicate_of"] = dupes[r["clip_id"]]
                        r["quality_flags"] = sorted(set(r["quality_flags"]) | {"duplicate"})
                table = pa.Table.from_pylist(rows, schema=SCHEMA)
            writer.write_table(table)
            for status in table.column("status").to_pylist():
                counts[status] += 1
    return counts


def rewrite_parts(out: Path | Store, cfg: JobConfig, fn, dupes: dict[str, str] | None = None):
    """Apply `fn` to each finished part's records, rewrite the part atomically, and yield the
    new records; the manifest is rebuilt once every part is done (with `dupes`, duplicates of
    these parts, when `fn` leaves them as they were: the shard stage's judge does)."""
    for p in parts_of(as_store(out)):
        stem = Path(p).stem
        records = fn(read_part(out, stem))
        write_part(out, stem, records)
        yield stem, records
    build_manifest(out, cfg, dupes)


def status_counts(out: Path | Store) -> dict[str, int]:
    statuses = as_store(out).read_table("manifest.parquet", columns=["status"]).column("status").to_pylist()
    return {"ok": statuses.count("ok"), "rejected": statuses.count("rejected"), "errors": statuses.count("error")}
