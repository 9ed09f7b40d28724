"""The audit server under load: N annotators submitting at once for S seconds.

    python benchmarks/audit_load.py [--annotators 8] [--seconds 60] [--clips 12] [--out FILE]

`pks audit serve` runs in its own process on 127.0.0.1 (only loopback traffic); each annotator
is a thread with its own login and keep-alive connection that submits a label on its next clip
as soon as the previous submission was answered (no think time: far more than people
produce). Every submission is a durable SQLite write (synchronous=FULL) and the server renders
the next clip's page with it. Prints latency percentiles, and the annotations in the database
against the submissions answered 200: they must be equal. tests/test_audit_web.py runs the
same for a few seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from annotators.audit.store import Store  # noqa: E402
from audit_support import cli_server, load, make_run, percentile  # noqa: E402
from report import emit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--out", help="also write the table to this file")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ids = make_run(out, n_clips=a.clips)
        s = Store(out)
        tokens = [s.add_user(f"a{k}", "annotator") for k in range(a.annotators)]
        with cli_server(out, "--gold-rate", "0") as (base, _):
            res = load(base, tokens, ids, a.seconds)
        stored = len(s.history())
    lat = res["latencies"]
    ms = {q: percentile(lat, q) * 1000 for q in (0.5, 0.95, 0.99)}
    emit(
        [
            f"{a.annotators} annotators x {a.seconds:.0f} s against `pks audit serve` on 127.0.0.1",
            "",
            "| submitted (200) | failed | in the database | submissions/s | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|---|---|",
            f"| {res['acked']} | {len(res['failed'])} | {stored} | {res['acked'] / a.seconds:.0f} | {ms[0.5]:.0f} "
            f"| {ms[0.95]:.0f} | {ms[0.99]:.0f} | {lat[-1] * 1000 if lat else float('nan'):.0f} |",
        ],
        a.out,
    )
    if res["failed"] or stored != res["acked"]:
        sys.exit(
            f"LOST OR FAILED: {stored} in the database for {res['acked']} acknowledged; failures: "
            f"{sorted(set(map(str, res['failed'])))[:5]}"
        )


if __name__ == "__main__":
    main()
