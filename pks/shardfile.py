"""A shard file's own format, shared by the pipeline that writes shards (pipelines/shard.py) and
the trainer that reads them (training/data.py, training/encode.py): WebDataset tars with a
fingerprint in a PAX global header, samples' byte ranges from the tar headers, and the record
hash that says whether a sample went stale. On the ground floor: the trainer reads shards
without importing the curation pipeline (Ray and the rest)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from pks.record import SCHEMA
from pks.store import Store, as_store

FINGERPRINT = "pks.fingerprint"  # the PAX global header that carries a shard's fingerprint


def digest(*parts: bytes | str) -> str:
    """BLAKE2b-128 of the parts, each closed by a NUL so ('ab', 'c') and ('a', 'bc') differ."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def record_digest(row: dict) -> str:
    """A manifest row's hash, blind to empty fields (null, "", []): a column added to the record
    later (read as null from older manifests, written empty by newer code) leaves the hashes of
    existing shards as they were."""
    return digest(json.dumps({k: v for k, v in row.items() if v is not None and v != "" and v != []}, sort_keys=True))


def tar_reader(tar: Path | io.IOBase) -> tarfile.TarFile:
    return tarfile.open(tar) if isinstance(tar, (str, Path)) else tarfile.open(fileobj=tar)


def members_of(tar: Path | io.IOBase) -> list[str]:
    """The sample keys of a finished shard (a path or an open file), in order (reads tar headers only)."""
    with tar_reader(tar) as t:
        return list(dict.fromkeys(n.split(".", 1)[0] for n in t.getnames()))


def member_end(m: tarfile.TarInfo) -> int:
    """Where a tar member's data ends, padded to the tar's block size."""
    return m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def sample_ranges(tar: Path | io.IOBase) -> dict[str, tuple[int, int]]:
    """Each sample's byte range in a finished shard (a path or an open file), its headers
    included: key -> (offset, length). Reads the tar headers only (tarfile seeks past the
    members' data)."""
    ranges: dict[str, tuple[int, int]] = {}
    with tar_reader(tar) as t:
        for m in t:
            key = m.name.split(".", 1)[0]
            start = ranges[key][0] if key in ranges else m.offset
            ranges[key] = (start, member_end(m) - start)
    return ranges


def written_fingerprint(tar: Path | io.IOBase) -> str:
    """The fingerprint a finished shard (a path or an open file) was written with ('' if none):
    its first header only."""
    try:
        with tar_reader(tar) as t:
            return t.pax_headers.get(FINGERPRINT, "")
    except (tarfile.TarError, OSError):
        return ""


def write_tar(final: Path | str, fingerprint: str, samples, out: Store | None = None) -> None:
    """A WebDataset tar of (key, {ext: bytes}) samples with the fingerprint in a PAX global
    header, at a path (or a key of `out`), written under a temporary name and renamed (or
    uploaded whole) when complete."""
    out, final = (out, str(final)) if out else (as_store(Path(final).parent), Path(final).name)
    with (
        out.writing(final) as tmp,
        tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT, pax_headers={FINGERPRINT: fingerprint}) as tar,
    ):
        for key, members in samples:
            for ext, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mode, info.mtime = len(payload), 0o444, 0  # same bytes on every rerun
                tar.addfile(info, io.BytesIO(payload))


def stale_samples(out) -> tuple[int, int]:
    """(stale, sharded) for OUT's shards against its manifest: a sample is stale when its record
    changed after `pks shard` wrote it (a caption, an audit correction, a Judge score, a
    re-stage) or its clip is no longer ok; an ok clip that no shard holds counts too."""
    out = as_store(out)
    held = {
        r["clip_id"]: r["record_hash"]
        for r in out.read_table("shards/index.parquet", columns=["clip_id", "record_hash"]).to_pylist()
    }
    current = {
        r["clip_id"]: record_digest(r)
        for r in out.read_table("manifest.parquet", schema=SCHEMA).to_pylist()
        if r["status"] == "ok"
    }
    return sum(current.get(c) != h for c, h in held.items()) + sum(c not in held for c in current), len(held)
