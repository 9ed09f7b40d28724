"""Which clip an annotator sees next.

Each clip goes to `overlap` annotators (agreement needs more than one); clips already started
by others come first, so overlaps complete before new clips open. Within that, a strategy:
- uncertain: clips whose caption needed re-asks, or where the measured camera tags and the
  model caption disagree, first;
- stratified: clips carrying the run's rarest caption tags first (rare tags get audited);
- random: a per-annotator shuffle.
Gold clips (known answers) are mixed in at `gold_rate`, so each annotator's accuracy on gold
is known; an annotator never sees the same clip twice.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from taxonomy.loader import TAG_AXES

STRATEGIES = ("uncertain", "stratified", "random")


@dataclass
class QueueConfig:
    overlap: int = 2  # annotators per clip
    strategy: str = "uncertain"
    gold_rate: float = 0.1  # share of a user's clips that are gold clips

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.overlap < 1 or not 0 <= self.gold_rate < 1:
            raise ValueError("overlap must be >= 1 and gold_rate in [0, 1)")


def _shuffle_key(user: str, clip_id: str) -> str:
    return hashlib.blake2b(f"{user}/{clip_id}".encode(), digest_size=8).hexdigest()


def uncertainty(row: dict) -> float:
    """How much a clip's labels are in doubt: caption re-asks, and measured camera tags the
    caption does not share (both named in ARCHITECTURE.md's record fields)."""
    m = re.search(r"\|reasks=(\d+)", row.get("caption_source") or "")
    score = float(m.group(1)) if m else 0.0
    caption = row.get("caption") or {}
    measured = set(row.get("camera_motion") or [])
    if caption and measured and not measured & set(caption.get("camera") or []):
        score += 1.0
    return score


def next_clips(
    rows: list[dict], done: dict[str, set[str]], gold: set[str], user: str, cfg: QueueConfig, n: int = 1
) -> list[str]:
    """The next `n` clip ids for `user`. rows: the run's records (ok clips with captions);
    done: {clip_id: users who labelled it}; gold: clip ids with a gold answer."""
    mine = {c for c, users in done.items() if user in users}
    labelled_by_user = len(mine)
    gold_seen = len(mine & gold)
    open_gold = sorted((c for c in gold if c not in mine), key=lambda c: _shuffle_key(user, c))
    candidates = [
        r
        for r in rows
        if r["clip_id"] not in mine and r["clip_id"] not in gold and len(done.get(r["clip_id"], ())) < cfg.overlap
    ]
    if cfg.strategy == "stratified":
        freq = Counter(f"{a}/{t}" for r in rows for a in TAG_AXES for t in ((r.get("caption") or {}).get(a) or []))

        def rarity(r):
            tags = [freq[f"{a}/{t}"] for a in TAG_AXES for t in ((r.get("caption") or {}).get(a) or [])]
            return min(tags) if tags else float("inf")

    order = {
        "uncertain": lambda r: -uncertainty(r),
        "stratified": lambda r: rarity(r),
        "random": lambda r: 0,
    }[cfg.strategy]
    candidates.sort(key=lambda r: (-len(done.get(r["clip_id"], ())), order(r), _shuffle_key(user, r["clip_id"])))
    out: list[str] = []
    pool = iter(candidates)
    for k in range(n):
        total = labelled_by_user + k + 1
        if open_gold and (gold_seen + 1) <= cfg.gold_rate * total + 1e-9:
            out.append(open_gold.pop(0))
            gold_seen += 1
            continue
        nxt = next(pool, None)
        if nxt is None:
            break
        out.append(nxt["clip_id"])
    return out
