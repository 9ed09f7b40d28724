"""Helpers over a curated run: edit its records as an audit would, read its shards back."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import webdataset as wds

from pipelines.parts import rewrite_parts


def manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def tars(out: Path) -> list[Path]:
    return sorted((out / "shards").rglob("*.tar"))


def shard_records(out: Path) -> dict[str, tuple[str, dict]]:
    """{clip_id: (shard path relative to OUT/shards, record)} read back with webdataset."""
    got = {}
    for s in wds.WebDataset([str(t) for t in tars(out)], shardshuffle=False, empty_check=False):
        assert s["__key__"] not in got, f"{s['__key__']} is in two shards"
        got[s["__key__"]] = (os.path.relpath(s["__url__"], out / "shards"), json.loads(s["json"]))
    return got


def stamps(out: Path) -> dict[str, int]:
    """Each shard's mtime: a kept shard keeps it."""
    return {str(t.relative_to(out / "shards")): t.stat().st_mtime_ns for t in tars(out)}


def edit(out: Path, cfg: dict, changes: dict[str, dict]) -> None:
    """Change fields of the named clips' records in their parts, then rebuild the manifest."""

    def apply(records):
        return [dataclasses.replace(r, **changes[r.clip_id]) if r.clip_id in changes else r for r in records]

    for _ in rewrite_parts(out, cfg, apply):
        pass


def assert_shards_match_manifest(out: Path) -> dict[str, tuple[str, dict]]:
    """Every ok clip is in exactly one shard, with exactly its manifest record."""
    ok = {r["clip_id"]: r for r in manifest(out) if r["status"] == "ok"}
    got = shard_records(out)
    assert set(got) == set(ok)
    for key, (_, record) in got.items():
        assert record == ok[key], key
    return got
