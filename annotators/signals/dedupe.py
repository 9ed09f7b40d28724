"""Near-duplicate clips (reused openings/endings, recaps, re-encodes) by perceptual hashes.

Each clip gets a signature: the 64-bit difference hash (dHash) of 8 frames sampled evenly.
Re-encoding, rescaling and small colour shifts flip few bits; different content flips about
half. Duplicates are marked (`duplicate` flag, `duplicate_of` the first clip seen), never
dropped.
"""

from __future__ import annotations

import cv2
import numpy as np

SAMPLES = 8


def dhash(rgb: np.ndarray) -> int:
    g = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (9, 8), interpolation=cv2.INTER_AREA)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def signature(rgb: np.ndarray) -> str:
    """Hex dHashes of SAMPLES evenly spaced frames, space-separated."""
    if len(rgb) == 0:
        return ""
    idx = np.linspace(0, len(rgb) - 1, SAMPLES).round().astype(int)
    return " ".join(f"{dhash(rgb[i]):016x}" for i in idx)


def distance(a: str, b: str) -> float:
    """Mean Hamming distance (bits of 64) between two signatures."""
    ha, hb = [int(x, 16) for x in a.split()], [int(x, 16) for x in b.split()]
    if not ha or len(ha) != len(hb):
        return 64.0
    return float(np.mean([bin(x ^ y).count("1") for x, y in zip(ha, hb)]))


def find_duplicates(items: list[tuple[str, str]], max_bits: float = 10.0) -> dict[str, str]:
    """{clip_id: duplicate_of} over (clip_id, signature) pairs, in the order given.

    Candidates share one exact 16-bit band of some sampled hash (a near-duplicate flips few
    bits, so some band survives intact); only candidates are compared in full."""
    buckets: dict[tuple[int, int, int], list[tuple[str, str]]] = {}
    dupes: dict[str, str] = {}
    for cid, sig in items:
        if not sig:
            continue
        hashes = [int(x, 16) for x in sig.split()]
        keys = {(i, band, (h >> (16 * band)) & 0xFFFF) for i, h in enumerate(hashes) for band in range(4)}
        seen = set()
        for k in keys:
            for other, osig in buckets.get(k, []):
                if other not in seen and other not in dupes:
                    seen.add(other)
                    if distance(sig, osig) <= max_bits:
                        dupes[cid] = other
                        break
            if cid in dupes:
                break
        if cid not in dupes:
            for k in keys:
                buckets.setdefault(k, []).append((cid, sig))
    return dupes
