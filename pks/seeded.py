"""Seeded draws that are pure functions of their inputs: the same number on every machine,
process and run, so shard plans and loader streams can be recomputed instead of stored."""

from __future__ import annotations

import hashlib


def unit(*parts) -> float:
    """A stable number in [0, 1) from the parts (e.g. a seed, a purpose, an index)."""
    h = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).hexdigest()
    return int(h, 16) / 2**64
