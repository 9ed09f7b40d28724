"""`pks audit apply`: adjudicated labels back into the run.

A lead's adjudication becomes the clip's caption with caption_source="human:{lead}" (caption
runs never overwrite it); one that says "failure, not art" makes the clip `rejected` with the
reason. Parts are rewritten atomically and the manifest rebuilt; shards change only when
`pks shard` runs again. Rerunning apply changes nothing that was already applied.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from annotators.audit.store import Store
from annotators.caption.captioner import HUMAN
from pks.jobconfig import JobConfig

AUDIT_REJECT = "audit: failure, not art"  # error prefix of clips rejected by an adjudication


def apply_adjudications(out: Path, cfg: JobConfig, store: Store) -> dict[str, int]:
    from pipelines.parts import rewrite_parts  # (pipelines imports Ray; keep it off the web app's import path)

    final = store.final("adjudication")
    counts = {"captions": 0, "rejected": 0, "unchanged": 0}

    def applied(records):
        result = []
        for r in records:
            a = final.get(r.clip_id)
            if a is None or r.status == "error":
                result.append(r)
                continue
            new = r
            if a.failure:
                why = f"{AUDIT_REJECT}" + (f" ({', '.join(a.reasons)})" if a.reasons else "")
                new = dataclasses.replace(r, status="rejected", error=why)
            elif r.status == "rejected" and r.error.startswith(AUDIT_REJECT):
                new = dataclasses.replace(r, status="ok", error="")  # a later adjudication took it back
            new = dataclasses.replace(new, caption=a.labels, caption_source=f"{HUMAN}{a.user}")
            if new == r:
                counts["unchanged"] += 1
            else:
                counts["rejected" if a.failure else "captions"] += 1
            result.append(new)
        return result

    for _ in rewrite_parts(Path(out), cfg, applied):
        pass
    return counts
