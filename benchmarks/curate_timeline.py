"""How a curate's wall time is spent across its Ray tasks: one run, pinned to N cores.

    python benchmarks/curate_timeline.py --video SRC_1080P.mp4 [--copies 3] [--segment-s 120] [--cpus 2] [--set KEY=JSON ...]

The long video is made as in benchmarks/scale.py (SRC remuxed `--copies` times). Curated with
clips.write false, on `--cpus` cores (the process and Ray's workers pinned to them). Prints:
- the run's wall time and source frames/s;
- the core-seconds its tasks were busy, from `ray.timeline()`;
- the utilisation: busy core-seconds over wall x cores;
- each task's start, end and length, from the run's start.
Idle cores at a video's end show as a utilisation under 1 and a last task that runs alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pks.config import load_config  # noqa: E402
from scale import curate, remux_copies  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--segment-s", type=float, default=120.0)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="KEY=JSON config override")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pks-timeline")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    long = remux_copies(a.video, a.copies, a.work / f"long-{a.copies}x.mp4")
    over = {k: json.loads(v) for k, v in (s.split("=", 1) for s in a.set)}
    cfg = load_config(None, {"shard.enabled": False, "split.segment_s": a.segment_s, "clips.write": False, **over})
    trace: dict = {}
    fps, _ = curate(long, cfg, a.cpus, a.work, "timeline", trace)
    t0, events = trace["t0"], trace["events"]
    spans = sorted(
        (e["ts"] / 1e6 - t0, (e["ts"] + e["dur"]) / 1e6 - t0)
        for e in events
        if e.get("ph") == "X" and e.get("cat", "").startswith("task::") and e.get("name", "").endswith("one_cpu_task")
    )
    busy = sum(end - start for start, end in spans)
    wall = trace["t1"] - t0
    print(f"{a.cpus} cores: wall {wall:.1f} s, {fps} source frames/s, {len(spans)} tasks")
    print(f"busy {busy:.1f} core-s, utilisation {busy / (wall * a.cpus):.3f}")
    for start, end in spans:
        print(f"  {start:7.2f} {end:7.2f} {end - start:6.2f}")


if __name__ == "__main__":
    main()
